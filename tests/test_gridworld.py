"""nalm.experiments.gridworld: the time-tracking grid world (Trask et al. 2018, §4.5), its vector form, the A2C agents."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")  # the optional extra nalm[rl]

import nalm.experiments.gridworld.env  # noqa: E402  (registers nalm/TimeGrid-v0)
from nalm import ConfigError, ShapeError  # noqa: E402
from nalm.engine.task import torch_generators  # noqa: E402
from nalm.experiments.gridworld.a2c import A2C, A2CConfig, a2c_loss, clip_grad_norm_per_seed_, evaluate, gae  # noqa: E402
from nalm.experiments.gridworld.agents import AgentConfig, build_agent  # noqa: E402
from nalm.experiments.gridworld.env import TimeGridConfig, TimeGridEnv, episode_png, render_frames, save_frames_png  # noqa: E402
from nalm.experiments.gridworld.vector import TimeGridVectorEnv  # noqa: E402

STAY, UP, DOWN, LEFT, RIGHT = range(5)
SMALL = AgentConfig(hidden_size=8, vision_size=8)


# -- the environment ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("observation", ["image", "grid"])
def test_check_env_passes(observation):
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(nalm.experiments.gridworld.env.ENV_ID, observation=observation, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning of the checker fails the test
        check_env(env.unwrapped)


def test_registered_once_and_import_nalm_stays_light():
    import importlib

    importlib.reload(nalm.experiments.gridworld.env)  # a second import must not register again (gymnasium would warn)
    assert nalm.experiments.gridworld.env.ENV_ID in gymnasium.registry
    code = "import sys, nalm, nalm.units; assert 'gymnasium' not in sys.modules, 'import nalm pulled gymnasium'"
    subprocess.run([sys.executable, "-c", code], check=True)


def play(env, actions, **options):
    obs, info = env.reset(seed=0, options=options)
    steps = []
    for a in actions:
        steps.append(env.step(a))
        if steps[-1][2]:
            break
    return obs, info, steps


def test_on_time_arrival_earns_m():
    env = TimeGridEnv(observation="grid")
    obs, info, steps = play(env, [STAY, STAY, RIGHT, RIGHT], agent=(0, 0), target=(0, 2), instruction=4)
    assert info["instruction"] == 4 and info["distance"] == 2
    assert [s[1] for s in steps] == [0.0, 0.0, 0.0, 1.0]
    assert [s[2] for s in steps] == [False, False, False, True] and not any(s[3] for s in steps)
    assert steps[-1][4]["on_time"] and steps[-1][4]["elapsed"] == 4


@pytest.mark.parametrize("waits, instruction, reward", [
    (0, 4, 0.0),     # arrives at t = 2, two early: 1 − 0.5·2
    (1, 4, 0.5),     # one early
    (3, 4, 0.5),     # t = 5, one late
    (3, 2, -0.5),    # t = 5, three late
    (5, 3, -1.0),    # t = 7, four late: floored at −1
])
def test_early_and_late_arrivals(waits, instruction, reward):
    env = TimeGridEnv(observation="grid", extra_steps=6)
    _, _, steps = play(env, [STAY] * waits + [RIGHT, RIGHT], agent=(2, 1), target=(2, 3), instruction=instruction)
    assert len(steps) == waits + 2
    assert steps[-1][1] == pytest.approx(reward)
    assert steps[-1][2] and not steps[-1][4]["on_time"]
    assert all(s[1] == 0.0 and not s[2] for s in steps[:-1])


def test_never_arriving_ends_at_the_limit_with_the_penalty():
    env = TimeGridEnv(observation="grid", extra_steps=5, timeout_penalty=-2.0)
    _, _, steps = play(env, [UP] * 20, agent=(0, 0), target=(4, 4), instruction=8)
    assert len(steps) == 13  # L = T + 5
    assert [s[1] for s in steps] == [0.0] * 12 + [-2.0]
    assert steps[-1][2] and not steps[-1][3] and not steps[-1][4]["arrived"]
    assert steps[-1][4]["agent"] == (0, 0)  # moves into the wall leave the agent in place


def test_instruction_is_shown_at_the_start_only_unless_asked():
    for every, later in ((False, 0), (True, 9)):
        env = TimeGridEnv(observation="grid", instruction_every_step=every)
        obs, _ = env.reset(seed=1, options={"instruction": 9})
        assert obs["instruction"].tolist() == [9] and obs["instruction"].dtype == np.int64
        assert env.step(STAY)[0]["instruction"].tolist() == [later]


def test_image_and_grid_show_the_same_squares():
    image, grid = TimeGridEnv(), TimeGridEnv(observation="grid")
    img = image.reset(seed=0, options={"agent": (1, 3), "target": (4, 0)})[0]["image"]
    g = grid.reset(seed=0, options={"agent": (1, 3), "target": (4, 0)})[0]["grid"]
    assert img.shape == (56, 56, 3) and img.dtype == np.uint8
    assert np.argwhere(g[..., 0]).tolist() == [[1, 3]] and np.argwhere(g[..., 1]).tolist() == [[4, 0]]
    red = np.argwhere((img == [255, 0, 0]).all(-1))
    grey = np.argwhere((img == [128, 128, 128]).all(-1))
    assert len(red) == len(grey) == 100  # 10 × 10 squares in 11-pixel cells
    assert (red // 11).min(0).tolist() == (red // 11).max(0).tolist() == [4, 0]
    assert (grey // 11).min(0).tolist() == (grey // 11).max(0).tolist() == [1, 3]


def test_seeding_reproduces_episodes():
    def episode(seed):
        env = TimeGridEnv(observation="grid")
        obs, info = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [(obs["grid"].copy(), info["instruction"])]
        for _ in range(30):
            obs, r, term, _, _ = env.step(env.action_space.sample())
            out.append((obs["grid"].copy(), r))
            if term:
                obs, info = env.reset()
                out.append((obs["grid"].copy(), info["instruction"]))
        return out

    a, b = episode(7), episode(7)
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    starts = {TimeGridEnv().reset(seed=s)[1]["instruction"] for s in range(30)}
    assert starts == set(range(8, 13))  # T ~ U{8..12}


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown option"):
        TimeGridEnv(sise=5)
    with pytest.raises(ConfigError, match="min_instruction"):
        TimeGridEnv(min_instruction=9, max_instruction=8)
    with pytest.raises(ConfigError, match="instruction_limit"):
        TimeGridEnv(instruction=200)
    with pytest.raises(ConfigError, match="outside"):
        TimeGridEnv().reset(seed=0, options={"agent": (5, 0)})
    with pytest.raises(ConfigError, match="unknown reset option"):
        TimeGridEnv().reset(seed=0, options={"T": 3})


# -- the vector environment ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("observation", ["image", "grid"])
def test_vector_env_matches_gymnasium_sync_vector_env(observation):
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    n = 6
    ours = TimeGridVectorEnv(n, observation=observation, min_instruction=2, max_instruction=4)
    theirs = SyncVectorEnv([lambda: TimeGridEnv(observation=observation, min_instruction=2, max_instruction=4)] * n,
                           autoreset_mode=AutoresetMode.SAME_STEP)
    o1, _ = ours.reset(seed=11)
    o2, _ = theirs.reset(seed=11)
    actions = np.random.Generator(np.random.SFC64(0)).integers(0, 5, (60, n))
    ends = 0
    for a in actions:
        for key in o1:
            assert np.array_equal(o1[key], o2[key]), key
        o1, r1, t1, u1, _ = ours.step(a)
        o2, r2, t2, u2, _ = theirs.step(a)
        assert np.array_equal(r1, r2) and np.array_equal(t1, t2) and np.array_equal(u1, u2)
        ends += t1.sum()
    assert ends > 20  # the comparison went through many auto-resets


def test_vector_env_oracle_is_always_on_time():
    env = TimeGridVectorEnv(64, observation="grid")
    env.reset(seed=0)
    rewards, on_time = [], []
    for _ in range(40):
        _, r, term, _, info = env.step(env.oracle_actions())
        rewards += r[term].tolist()
        on_time += info["on_time"][term].tolist()
    assert len(rewards) > 100 and set(rewards) == {1.0} and all(on_time)


def test_vector_env_fixed_instruction_holds_across_auto_resets():
    env = TimeGridVectorEnv(4, observation="grid")
    obs, _ = env.reset(seed=0, options={"instruction": [20, 21, 22, 23]})
    assert obs["instruction"][:, 0].tolist() == [20, 21, 22, 23]
    for _ in range(30):
        _, _, term, _, info = env.step(np.zeros(4, dtype=np.int64))  # stay: time out at T + 5
        assert info["instruction"].tolist() == [20, 21, 22, 23]
    with pytest.raises(ShapeError):
        env.step(np.full(4, 5))


# -- rendering ----------------------------------------------------------------------------------------------------
def test_render_frames_and_png(tmp_path):
    env = gymnasium.make(nalm.experiments.gridworld.env.ENV_ID, render_mode="rgb_array")
    frames = render_frames(env, 4, seed=3)
    assert len(frames) == 4 and all(f.shape == (56, 56, 3) and f.dtype == np.uint8 for f in frames)
    whole = render_frames(env, 100, seed=3)  # the oracle finishes its episode at t = T
    assert len(whole) == env.unwrapped._info()["instruction"] + 1
    save_frames_png(frames, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shots = episode_png(tmp_path / "e.png", seed=1, frames=5, policy="random")
    assert len(shots) <= 5 and (tmp_path / "e.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="render_mode"):
        render_frames(gymnasium.make(nalm.experiments.gridworld.env.ENV_ID), 3)


# -- A2C maths ----------------------------------------------------------------------------------------------------
def test_a2c_loss_on_a_hand_computed_two_step_case():
    # Two steps, one seed, one episode, two actions. π0 = (1/2, 1/2), π1 = (3/4, 1/4); actions 1 then 0.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], requires_grad=True)
    values = torch.tensor([0.5, 0.2])
    rewards, dones = torch.tensor([0.0, 1.0]), torch.tensor([False, True])
    adv, ret = gae(rewards.view(2, 1, 1), values.view(2, 1, 1), dones.view(2, 1, 1), torch.tensor([[7.0]]),
                   gamma=0.9, lam=1.0)
    # δ1 = 1 − 0.2 (episode over: no bootstrap) = 0.8;  δ0 = 0 + 0.9·0.2 − 0.5 = −0.32;  Â0 = δ0 + 0.9·Â1 = 0.4
    assert adv.flatten().tolist() == pytest.approx([0.4, 0.8])
    assert ret.flatten().tolist() == pytest.approx([0.9, 1.0])
    terms = a2c_loss(logits.view(2, 1, 1, 2), values.view(2, 1, 1), torch.tensor([1, 0]).view(2, 1, 1), adv, ret,
                     value_coef=0.5, entropy_coef=0.01)
    policy = -(0.4 * math.log(0.5) + 0.8 * math.log(0.75)) / 2
    value = ((0.9 - 0.5) ** 2 + (1.0 - 0.2) ** 2) / 2
    entropy = (math.log(2) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / 2
    assert terms["policy_loss"].item() == pytest.approx(policy)
    assert terms["value_loss"].item() == pytest.approx(value)
    assert terms["entropy"].item() == pytest.approx(entropy)
    assert terms["loss"].item() == pytest.approx(policy + 0.5 * value - 0.01 * entropy)
    terms["policy_loss"].sum().backward()
    # ∂/∂logits0 of −Â0·log π0(1)/2 = −(Â0/2)·(onehot(1) − π0) = (0.1, −0.1)
    assert logits.grad[0].tolist() == pytest.approx([0.1, -0.1])


def test_gae_lambda_and_bootstrap():
    values, rewards = torch.tensor([0.5, 0.2]).view(2, 1), torch.tensor([0.0, 1.0]).view(2, 1)
    adv, _ = gae(rewards, values, torch.tensor([False, False]).view(2, 1), torch.tensor([7.0]), 0.9, 0.5)
    # δ1 = 1 + 0.9·7 − 0.2 = 7.1;  Â0 = −0.32 + 0.9·0.5·7.1
    assert adv.flatten().tolist() == pytest.approx([-0.32 + 0.45 * 7.1, 7.1])
    adv, _ = gae(rewards, values, torch.tensor([True, False]).view(2, 1), torch.tensor([7.0]), 0.9, 0.5)
    assert adv.flatten().tolist() == pytest.approx([-0.5, 7.1])  # nothing flows back across an episode's end


def loss_per_seed(agent, scale):
    env = TimeGridVectorEnv(2 * 3, observation="grid")
    obs, _ = env.reset(seed=0)
    logits, value, _ = agent.step(obs, agent.initial_state(3))
    return (logits.square().mean((1, 2)) + value.square().mean(1)) * torch.tensor(scale)


def test_gradient_clipping_is_per_seed():
    env_config = TimeGridConfig(observation="grid")
    base = build_agent("a2c-nac", env_config, 2, SMALL, generator=torch_generators([1, 2], "init"))
    after = {}
    for name, scale in (("plain", [1.0, 1.0]), ("huge", [1e6, 1.0])):
        agent = copy.deepcopy(base)
        opt = torch.optim.SGD(agent.parameters(), lr=0.1)
        loss_per_seed(agent, scale).sum().backward()
        norms = clip_grad_norm_per_seed_(agent.parameters(), max_norm=0.01)
        assert norms.shape == (2,) and (norms > 0.01).all()
        clipped = torch.stack([sum(p.grad[s].square().sum() for p in agent.parameters()) for s in range(2)]).sqrt()
        assert clipped.tolist() == pytest.approx([0.01, 0.01], rel=1e-4)
        opt.step()
        after[name] = agent
        if name == "huge":  # the same gradients under torch's joint clipping: seed 1's update would shrink
            joint = copy.deepcopy(base)
            loss_per_seed(joint, scale).sum().backward()
            torch.nn.utils.clip_grad_norm_(joint.parameters(), 0.01)
            g1 = torch.stack([p.grad[1].square().sum() for p in joint.parameters()]).sum().sqrt()
            assert g1 < 1e-6
    for (name, p), q in zip(after["plain"].named_parameters(), after["huge"].parameters()):
        assert torch.equal(p[1], q[1]), name  # seed 1's update is untouched by seed 0's huge gradient
    assert any(not torch.equal(p[1], q[1]) for p, q in zip(base.parameters(), after["huge"].parameters()))


# -- agents -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, wiring, observation", [
    ("a2c-lstm", "paper", "image"), ("a2c-nac", "paper", "grid"), ("a2c-nac", "counter", "image"),
])
def test_agents_keep_seeds_apart(name, wiring, observation):
    env_config = TimeGridConfig(observation=observation)
    config = AgentConfig(hidden_size=8, vision_size=8, nac_wiring=wiring)
    pair = build_agent(name, env_config, 2, config, generator=torch_generators([4, 9], "init"))
    single = build_agent(name, env_config, 1, config, generator=torch_generators([9], "init"))
    for (pname, p), q in zip(pair.named_parameters(), single.parameters()):
        assert p.shape[0] == 2 and torch.equal(p[1], q[0]), pname  # seed 9 drawn from its own stream only
    env = TimeGridVectorEnv(6, env_config)
    obs, _ = env.reset(seed=3)
    logits, value, state = pair.step(obs, pair.initial_state(3))
    assert logits.shape == (2, 3, 5) and value.shape == (2, 3)
    one = single.step({k: v[3:] for k, v in obs.items()}, single.initial_state(3))
    assert torch.allclose(logits[1], one[0][0], atol=1e-6) and torch.allclose(value[1], one[1][0], atol=1e-6)
    # The first policy is nearly uniform (the policy head starts at 0.01 of its usual scale).
    assert (torch.softmax(logits, -1) - 0.2).abs().max() < 0.02
    (logits.square().sum() + value.square().sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in pair.parameters())


def test_first_flag_restarts_the_state():
    env_config = TimeGridConfig(observation="grid")
    agent = build_agent("a2c-nac", env_config, 1, AgentConfig(hidden_size=8, vision_size=8, nac_wiring="counter"),
                        generator=torch_generators([0], "init"))
    env = TimeGridVectorEnv(2, env_config)
    obs, _ = env.reset(seed=0)
    busy = tuple(torch.full_like(x, 0.7) for x in agent.initial_state(2))
    fresh = agent.step(obs, agent.initial_state(2))
    restarted = agent.step(obs, busy, np.array([[True, False]]))
    assert torch.equal(restarted[0][:, 0], fresh[0][:, 0])
    assert not torch.allclose(restarted[0][:, 1], fresh[0][:, 1])


# -- training and evaluation --------------------------------------------------------------------------------------
def test_short_training_improves_a_trivial_setting():
    # 2 × 2 grid, T = 1: on time needs the right first move towards an adjacent target (2 of 3 starts).
    env_config = TimeGridConfig(size=2, instruction=1, extra_steps=2, observation="grid")
    seeds = [0, 1]
    agent = build_agent("a2c-lstm", env_config, 2, AgentConfig(hidden_size=16, vision_size=16),
                        generator=torch_generators(seeds, "init"))
    before = evaluate(agent, env_config, instructions=[1], episodes=200)
    trainer = A2C(agent, env_config, A2CConfig(num_envs=32, n_steps=8, learning_rate=1e-2), seeds)
    curves = trainer.train(100, log_every=20)
    after = evaluate(agent, env_config, instructions=[1], episodes=200)
    assert len(curves["update"]) == 5 and curves["env_steps"][-1] == 100 * 8 * 32
    assert all(len(row) == 2 for row in curves["episode_reward"] + curves["policy_loss"] + curves["on_time"])
    assert (before["reward"] < -0.2).all() and (before["on_time"] < 0.25).all()  # random: 2/3 · 1/5 on time
    assert (after["reward"] > before["reward"] + 0.6).all()
    assert (after["on_time"] > 0.55).all()  # at most 2/3: diagonal targets cannot be reached at t = 1


def test_evaluation_rates_and_reproducibility():
    env_config = TimeGridConfig(observation="grid")
    agent = build_agent("a2c-lstm", env_config, 2, SMALL, generator=torch_generators([0, 1], "init"))
    a = evaluate(agent, env_config, instructions=[8, 25], episodes=20, seed=4)
    b = evaluate(agent, env_config, instructions=[25, 8], episodes=20, seed=4)
    assert a["instructions"].tolist() == [8, 25]
    for key in ("reward", "on_time", "early", "late", "timeout"):
        assert a[key].shape == (2, 2) and np.array_equal(a[key], b[key]), key
    total = a["on_time"] + a["early"] + a["late"] + a["timeout"]
    assert np.allclose(total, 1.0)
    assert (a["reward"] >= -1).all() and (a["reward"] <= 1).all()


def test_a2c_resumes_exactly_from_its_state_dict():
    import io

    env_config = TimeGridConfig(observation="grid", min_instruction=3, max_instruction=5)
    config = A2CConfig(num_envs=4, n_steps=5)

    def trainer():
        agent = build_agent("a2c-nac", env_config, 2, SMALL, generator=torch_generators([0, 1], "init"))
        return A2C(agent, env_config, config, seeds=[0, 1])

    straight = trainer()
    straight.train(3)
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    straight.train(3)
    resumed = trainer()
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.train(3)
    assert resumed.updates == straight.updates == 6
    for (name, p), q in zip(straight.agent.named_parameters(), resumed.agent.parameters()):
        assert torch.equal(p, q), name
    fresh = trainer()
    fresh.train(6)  # and the whole run is reproducible from the seeds
    assert all(torch.equal(p, q) for p, q in zip(straight.agent.parameters(), fresh.agent.parameters()))


def test_a3c_hogwild_workers_train_one_shared_agent():
    from nalm.experiments.gridworld.a3c import train_a3c

    env_config = TimeGridConfig(size=2, instruction=1, extra_steps=2, observation="grid")
    agent = build_agent("a2c-lstm", env_config, 1, AgentConfig(hidden_size=16, vision_size=16),
                        generator=torch_generators([0], "init"))
    before = evaluate(agent, env_config, instructions=[1], episodes=200)
    curves = train_a3c(agent, env_config, A2CConfig(num_envs=16, n_steps=8, learning_rate=1e-2), seed=0,
                       workers=2, updates=100)
    after = evaluate(agent, env_config, instructions=[1], episodes=200)
    assert sorted(curves["worker"]) == [0] * 100 + [1] * 100  # both workers reported every update
    assert all(len(v) == 1 for v in curves["policy_loss"])
    assert after["reward"].item() > before["reward"].item() + 0.5  # the shared agent learned (Hogwild varies)
    with pytest.raises(ConfigError, match="one seed"):
        train_a3c(build_agent("a2c-lstm", env_config, 2, SMALL), env_config, workers=1, updates=1)
