"""The ``gridworld`` experiment (Figure 5): options, its own training loop through the store (curves, checkpoints,
exact resume), A3C, TensorBoard, summaries, claims over stored results, samples, the PNG and the report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

import nalm.experiments.gridworld.experiment as gw  # noqa: E402
from nalm import ConfigError  # noqa: E402
from nalm.cli import main  # noqa: E402
from nalm.engine import NOT_REPRODUCED, NOT_RUN, REPRODUCED, ReportContext, RunSpec, make_config, run  # noqa: E402
from nalm.engine.store import Store, config_key  # noqa: E402
from nalm.engine.task import torch_generators  # noqa: E402
from nalm.engine.train import TrainConfig, TrainResult  # noqa: E402
from nalm.experiments.gridworld.agents import build_agent  # noqa: E402

TINY_TASK = {"hidden_size": 8, "vision_size": 8, "n_steps": 4, "eval_episodes": 6, "eval_max_instruction": 14}
TINY = TrainConfig(iterations=6, seeds=2, batch_size=6, eval_every=2, learning_rate=1e-2, grad_clip=40.0,
                   regularizers={})
EXP = gw.Gridworld()


def test_config_options_are_checked():
    with pytest.raises(ConfigError, match="observation"):
        make_config(gw.GridworldConfig, {"observation": "pixels"})
    with pytest.raises(ConfigError, match="min_instruction"):
        make_config(gw.GridworldConfig, {"min_instruction": 13})
    with pytest.raises(ConfigError, match="unknown option"):
        make_config(gw.GridworldConfig, {"instructions": 3})
    with pytest.raises(ConfigError, match="workers"):
        make_config(gw.GridworldConfig, {"workers": 0})
    with pytest.raises(ConfigError, match="unknown model"):
        RunSpec("gridworld", "a2c-gru")
    with pytest.raises(ConfigError, match="lr_decay"):  # A2C keeps its rate: refused, not silently ignored
        RunSpec("gridworld", "a2c-nac", {}, TrainConfig(lr_decay=0.5))
    c = gw.GridworldConfig()
    assert c.agent("a2c-nac-counter")[1].nac_wiring == "counter" and c.agent("a2c-lstm")[0] == "a2c-lstm"
    assert c.a2c_config(TINY).num_envs == 6 and c.a2c_config(TINY).max_grad_norm == 40.0


def test_horizon():
    T = np.arange(8, 16)
    assert gw.horizon(np.array([1, 1, .9, .6, .5, .4, .9, .9]), T, 8) == 12  # the first T below 0.5 ends it
    assert gw.horizon(np.full(8, 0.2), T, 8) == 7
    assert gw.horizon(np.ones(8), T, 8) == 15


def _train(store, model="a2c-nac", task=TINY_TASK, train=TINY):
    spec = RunSpec("gridworld", model, dict(task), train)
    key = config_key(spec.resolved())
    store.start_run(key, spec.experiment, spec.name, spec.resolved())
    return spec, key, EXP.train(spec, store=store, key=key)


def test_a_killed_run_resumes_exactly(tmp_path, monkeypatch):
    from nalm.experiments.gridworld import a2c

    with Store(tmp_path / "straight.sqlite") as store:
        _, key, straight = _train(store)
        curves = store.curves(key)
    assert [r["step"] for r in curves if r["seed"] == 0] == [2, 4, 6]
    assert {"episode_reward", "on_time", "policy_loss", "value_loss", "entropy", "env_steps"} <= set(curves[0])
    assert [r["seed"] for r in straight.records] == [0, 1]
    assert all(r["best_step"] == 6 and r["env_steps"] == 6 * 6 * 4 for r in straight.records)

    update, calls = a2c.A2C.update, []

    def dies_at_update_5(self):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed after the checkpoint of update 4
        return update(self)

    path = tmp_path / "killed.sqlite"
    with Store(path) as store:
        monkeypatch.setattr(a2c.A2C, "update", dies_at_update_5)
        with pytest.raises(KeyboardInterrupt):
            _train(store)
        monkeypatch.setattr(a2c.A2C, "update", update)
        assert store.checkpoint_step(key) == 4
        _, _, resumed = _train(store)
        # the curve rows of both parts, as one uninterrupted run wrote them (but for the wall-clock seconds)
        assert [{**r, "seconds": 0} for r in store.curves(key)] == [{**r, "seconds": 0} for r in curves]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert [{k: v for k, v in r.items()} for r in resumed.records] == straight.records
    assert resumed.artifacts == straight.artifacts


def _fake_run(store, model, holds_to, seeds=3, early=True, train_range=(8, 12), iterations=100, **task):
    """A finished run whose agents are on time (rate 0.95) up to ``holds_to`` and then fail (early or late)."""
    T = np.arange(train_range[0], 31)
    on = np.where(T <= holds_to, 0.95, 0.05)
    per = {"instructions": T.tolist(), "seeds": list(range(seeds)), "on_time": [on.tolist()] * seeds,
           "reward": [(2 * on - 1).tolist()] * seeds, "early": [((1 - on) * early).tolist()] * seeds,
           "late": [((1 - on) * (not early)).tolist()] * seeds, "timeout": [np.zeros(len(T)).tolist()] * seeds}
    ev = {k: np.asarray(v) for k, v in per.items() if k != "seeds"}
    config = gw.GridworldConfig()
    weights = [[[0.2, -0.1, 0.3]]] * seeds if model != "a2c-lstm" else None
    records = gw.seed_records(ev, range(seeds), config, [False] * seeds, iterations, 1000, weights)
    train = TrainConfig(iterations=iterations, seeds=seeds, batch_size=64, regularizers={})
    spec = RunSpec("gridworld", model, task, train)
    result = TrainResult(records, [], None, 1.0, {"per_instruction": per, **({"nac_weights": weights} if weights
                                                                                else {})})
    summary = EXP.summarize(spec, result)
    key = config_key(spec.resolved())
    store.start_run(key, "gridworld", spec.name, spec.resolved())
    store.save_checkpoint(key, 50, {}, [{"seed": s, "step": 50, "env_steps": 500 * (k + 1), "episode_reward": 0.1 * k,
                                         "on_time": 0.2 * k} for s in range(seeds) for k in range(2)])
    store.finish_run(key, records, summary, 1.0, result.artifacts)
    return summary


@pytest.mark.parametrize("lstm, nac, early, answers", [
    (13, 19, True, (REPRODUCED, REPRODUCED, REPRODUCED)),
    (13, 13, True, (REPRODUCED, REPRODUCED, NOT_REPRODUCED)),   # the NAC agent does not extrapolate further
    (18, 20, False, (REPRODUCED, NOT_REPRODUCED, REPRODUCED)),  # the baseline holds too long and fails late
    (7, 19, True, (NOT_REPRODUCED, REPRODUCED, REPRODUCED)),    # the baseline never learned the training range
])
def test_claims_over_stored_runs(tmp_path, lstm, nac, early, answers):
    with Store(tmp_path / "s.sqlite") as store:
        ctx = ReportContext(store, [], tmp_path)
        assert [c.check(ctx).answer for c in EXP.claims] == [NOT_RUN] * 3
        summary = _fake_run(store, "a2c-lstm", lstm, early=early)
        assert summary["horizon"]["median"] == lstm and summary["per_T"]["T"][0] == 8
        _fake_run(store, "a2c-nac", nac)
        ctx = ReportContext(store, store.runs("gridworld"), tmp_path)
        verdicts = [c.check(ctx) for c in EXP.claims]
        assert tuple(v.answer for v in verdicts) == answers, [v.evidence for v in verdicts]
        assert f"up to T = {nac}" in verdicts[2].evidence and f"holds to {lstm}" in verdicts[2].evidence


@pytest.mark.parametrize("hand_set, why", [(20, "Learning, not representation: a counter of the agent's own"),
                                           (15, "Not the NAC's weights: even with the countdown given")])
def test_the_nac_agents_why_comes_from_the_counter_with_learned_and_given_weights(tmp_path, hand_set, why):
    with Store(tmp_path / "s.sqlite") as store:
        _fake_run(store, "a2c-lstm", 15)
        _fake_run(store, "a2c-nac", 14)
        _fake_run(store, "a2c-nac-counter", 15)
        ctx = ReportContext(store, store.runs("gridworld"), tmp_path)
        assert EXP.claims[2].check(ctx).why == ""  # no hand-set run: no cause claimed
        _fake_run(store, "a2c-nac-counter", hand_set, counter_weights=gw.COUNTDOWN)
        ctx = ReportContext(store, store.runs("gridworld"), tmp_path)
        v = EXP.claims[2].check(ctx)
        # the hand-set run is a controlled run, not the counter variant's row
        assert v.answer == NOT_REPRODUCED and "our a2c-nac-counter variant holds to 15" in v.evidence
        assert v.why.startswith(why) and f"hand-set to (1,-0.1,1) {hand_set}" in v.why
        assert "the paper's wiring 14, the learned counter 15 (its NAC weights at most 0.30 in size)" in v.why


def test_the_hand_set_counter_counts_down_and_is_checked():
    config = gw.GridworldConfig(counter_weights=gw.COUNTDOWN)
    name, agent_config = config.agent("a2c-nac-counter")
    agent = build_agent(name, config.env_config(), 2, agent_config)
    state = agent.initial_state(3)
    obs = {"grid": np.zeros((6, 50), dtype=np.float32), "instruction": np.full((6, 1), 12.0)}
    _, _, state = agent.step(obs, state)
    obs["instruction"][:] = 0
    _, _, state = agent.step(obs, state)
    assert torch.allclose(state[2], torch.full((2, 3, 1), 1.2 - 0.2))  # T/10 − 0.1·(t + 1) at t = 1
    assert gw.nac_weights(agent) == [[[1.0, -0.1, 1.0]]] * 2
    for bad in ("1,2", "a,b,c", "1,nan,1"):
        with pytest.raises(ConfigError, match="counter_weights"):
            gw.GridworldConfig(counter_weights=bad)
    with pytest.raises(ConfigError, match="needs the model a2c-nac-counter"):
        config.agent("a2c-nac")
    assert "counter_weights" not in RunSpec("gridworld", "a2c-nac", {}, TrainConfig()).resolved()["task"]


def test_seed_blocks_merge_into_one_run(tmp_path):
    """A run trained as blocks of seeds (nalm.engine.executors) gets the artifacts and summary of one run."""
    spec = RunSpec("gridworld", "a2c-nac", dict(TINY_TASK), TINY)
    with Store(tmp_path / "s.sqlite") as store:
        whole = _train(store, train=TINY)[2]
    parts = [(RunSpec("gridworld", "a2c-nac", dict(TINY_TASK), TrainConfig(**{**TINY.__dict__, "first_seed": s,
                                                                              "seeds": 1})),
              {k: ({**v, **{m: v[m][s:s + 1] for m in v if m != "instructions"}} if k == "per_instruction"
                   else v[s:s + 1]) for k, v in whole.artifacts.items()}) for s in (0, 1)]
    merged = EXP.merge_artifacts(spec, parts, whole.records)
    assert merged == whole.artifacts
    assert EXP.summarize(spec, TrainResult(whole.records, [], None, 1.0, merged)) == \
        EXP.summarize(spec, whole)


def test_a_seed_trained_alone_equals_the_same_seed_trained_beside_another(tmp_path):
    """Seed independence end to end: training and evaluation of seed 1 do not depend on seed 0 being there."""
    with Store(tmp_path / "s.sqlite") as store:
        both = _train(store)[2]
        alone = _train(store, train=TrainConfig(**{**TINY.__dict__, "first_seed": 1, "seeds": 1}))[2]
    assert [r["seed"] for r in alone.records] == [1]
    for name, value in alone.artifacts.items():
        if name == "per_instruction":
            for m, v in value.items():
                np.testing.assert_array_equal(np.asarray(v)[:1] if m != "instructions" else v,
                                              np.asarray(both.artifacts[name][m])[1:] if m != "instructions"
                                              else both.artifacts[name][m], err_msg=m)
        else:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(both.artifacts[name])[1:], err_msg=name)
    assert {k: v for k, v in alone.records[0].items() if k != "seconds"} == \
        {k: v for k, v in both.records[1].items() if k != "seconds"}


def test_report_section_tables_and_figures(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        for model, h in (("a2c-lstm", 13), ("a2c-nac", 15), ("a2c-nac-counter", 18)):
            _fake_run(store, model, h)
        lines = EXP.report(ReportContext(store, store.runs("gridworld"), tmp_path))
    text = "\n".join(lines)
    assert lines[0].startswith("## Figure 5")
    assert "| LSTM (baseline) | 3 | 0.95 [0.95, 0.95] |" in text
    assert "13 (13, 13, 13)" in text and "18 (18, 18, 18)" in text
    assert "extrapolates 2 instruction(s) further than the baseline" in text
    assert "max |W| = 0.30, W = (+0.20, -0.10, +0.30)" in text
    for name in ("figure5_gridworld.png", "gridworld_training.png"):
        assert f"]({name})" in text and (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_samples_walk_on_time_and_the_png(tmp_path):
    from nalm.experiments.gridworld.env import ACTION_NAMES, TimeGridEnv

    config = gw.GridworldConfig()
    for split in ("train", "evaluation"):
        items = EXP.sample(config, split, 6, seed=1)
        assert len(items) == 6 and all(len(i["on_time_actions"]) == i["instruction"] for i in items)
        for item in items:
            env = TimeGridEnv(observation="grid")
            env.reset(seed=0, options={"instruction": item["instruction"], "agent": item["agent"],
                                       "target": item["target"]})
            rewards = [env.step(ACTION_NAMES.index(a))[1] for a in item["on_time_actions"]]
            assert rewards[-1] == 1.0 and item["grid"][item["agent"][0]][item["agent"][1]] == "A"
    assert [i["instruction"] for i in EXP.sample(config, "evaluation", 4, 0)] == [8, 9, 10, 11]
    assert {i["instruction"] for i in EXP.sample(config, "train", 30, 0)} <= set(range(8, 13))
    assert EXP.sample(config, "train", 3, 0) == EXP.sample(config, "train", 3, 0) != EXP.sample(config, "train", 3, 1)
    EXP.write_png(config, "train", 4, 0, tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_run_prints_rates_per_instruction(tmp_path, capsys):
    store = str(tmp_path / "s.sqlite")
    args = ["run", "gridworld", "--model", "a2c-lstm", "--seeds", "2", "--iterations", "2", "--batch-size", "4",
            "--n-steps", "3", "--hidden-size", "8", "--vision-size", "8", "--eval-episodes", "4",
            "--eval-max-instruction", "13", "--json", "--store", store]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == 2 and out["per_T"]["T"] == [8, 9, 10, 11, 12, 13]
    assert len(out["per_T"]["on_time"]) == len(out["per_T"]["reward"]) == 6 and len(out["horizons"]) == 2
    assert main(["run", "gridworld", "--device", "cuda", "--store", store]) == 2  # no CUDA here, or CPU-only


def test_a3c_trains_each_seed_through_the_experiment_and_resumes(tmp_path, monkeypatch):
    from nalm.experiments.gridworld import a3c

    task = {**TINY_TASK, "algorithm": "a3c", "workers": 2}
    train_a3c, calls = a3c.train_a3c, []

    def dies_in_seed_1(*args, **kwargs):  # seed 0: 3 rounds of 2 updates; killed in seed 1's second round
        calls.append(kwargs["seed"])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return train_a3c(*args, **kwargs)

    with Store(tmp_path / "s.sqlite") as store:
        monkeypatch.setattr(a3c, "train_a3c", dies_in_seed_1)
        with pytest.raises(KeyboardInterrupt):
            _train(store, "a2c-lstm", task, TINY)
        spec, key, result = _train(store, "a2c-lstm", task, TINY)  # resumes: seed 0 done, seed 1 after 2 updates
        rows = store.curves(key)
    assert calls == [0, 0, 0, 1, 1, 1, 1] and spec.name == "gridworld/a2c-lstm/grid/a3c"
    assert sorted({(r["seed"], r["step"]) for r in rows}) == [(s, k) for s in (0, 1) for k in (2, 4, 6)]
    assert [r["seed"] for r in result.records] == [0, 1] and not any(r["diverged"] for r in result.records)
    c = make_config(gw.GridworldConfig, task)
    init = build_agent("a2c-lstm", c.env_config(), 2, c.agent("a2c-lstm")[1],
                       generator=torch_generators([0, 1], "init"))
    for s in (0, 1):  # every seed was trained (its slice moved away from its initialisation)
        assert any(not torch.equal(p[s], q[s]) for p, q in zip(result.model.parameters(), init.parameters()))


def test_tensorboard_logs_every_seed(tmp_path):
    train = dataclasses.replace(TINY, tensorboard=str(tmp_path / "tb"))
    with Store(tmp_path / "s.sqlite") as store:
        _train(store, "a2c-lstm", TINY_TASK, train)
    assert all(any((tmp_path / "tb" / f"seed{s}").glob("events.out.tfevents.*")) for s in (0, 1))


def test_smoke_run_through_the_engine(tmp_path):
    spec = RunSpec("gridworld", "a2c-nac-counter", dict(EXP.smoke), TINY)
    with Store(tmp_path / "s.sqlite") as store:
        summary = run(spec, store)
        assert run(spec, store) == summary  # the second time it is read from the store
    assert summary["seeds"] == 2 and summary["nac_max_abs_weight"]["max"] <= 1.0
    assert EXP.cost(spec) > 0 and EXP.grid("quick") and EXP.grid("paper")[0].task["observation"] == "image"
