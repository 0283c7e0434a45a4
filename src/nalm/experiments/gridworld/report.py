"""The report section of the ``gridworld`` experiment (Figure 5 of Trask et al. 2018, §4.5): per setting, the agents'
on-time rate and reward inside and beyond the training range of T, how far each holds, how it fails, its NAC
weights, Figure 5 and the training curves. Reads the store only (summaries, per-T artifacts, curves).
"""

from __future__ import annotations

import numpy as np

from nalm.engine.reporting import figure_name, num, settings, table

from .figures import figure5, training_curves

SETUP = (
    "**Setup.** The gymnasium environment `nalm/TimeGrid-v0`: a 5 × 5 grid, the red target and the grey agent placed "
    "at random, 5 actions (stay, up, down, left, right); at t = 0 the agent is told an integer T (shown as 0.1·T at "
    "t = 0 only) and must first step onto the target at exactly t = T. Reward (ours; the paper gives none): +1 on "
    "time, max(−1, 1 − 0.5·|t − T|) for arriving early or late, −1 if it never arrives by L = T + 5; the episode ends "
    "on arrival or at L. Training draws T uniformly from [8, 12] (8: the farthest a target can be); evaluation plays "
    "the same fixed episodes for every agent and T, sampling actions from the trained policy. **Agents** (Mnih et "
    "al. 2016's A3C agent, smaller): vision (one linear layer on the one-hot grid, or their conv stack on the 56 × 56 "
    "image) → LSTM (64) → policy and value heads; *LSTM (baseline)*: the instruction concatenated to the vision "
    "output before the LSTM; *LSTM + NAC (paper wiring)*: also n_t = NAC([i_t, h_{t−1}]) fed into the LSTM "
    "(the instruction and the LSTM's previous output pass through a NAC whose output returns into the LSTM); "
    "*LSTM + NAC counter* (our variant): the NAC is a recurrent cell of its own, n_t = NAC([i_t, 1, n_{t−1}]), "
    "which could hold a countdown T/10 − 0.1·t with weights (1, −0.1, 1). Initialisation is general (PyTorch's "
    "defaults, the NAC's Glorot uniform, the policy head scaled by 0.01), nothing points at a counter. **Training**: "
    "A2C (the synchronous A3C; S seeds as one tensor program, per-seed losses and gradient clipping), GAE λ = 0.95, "
    "γ = 0.99, entropy 0.01, Adam. *Holds to T*: the largest T up to which the on-time rate stays ≥ 0.5 at every "
    "instruction from 8 (7: not even at T = 8).")
PUBLISHED = ("**Published** (Figure 5, no numbers): the A3C baseline \"fails beyond T ≈ 13\" (behaving as if T were "
             "12), the NAC agent holds up to T ≈ 19; both master the training range.")

MODELS = ("a2c-lstm", "a2c-nac", "a2c-nac-counter")
LABELS = {"a2c-lstm": "LSTM (baseline)", "a2c-nac": "LSTM + NAC (paper wiring)",
          "a2c-nac-counter": "LSTM + NAC counter (our variant)"}
#: The paper's reading of Figure 5 (no numbers are published): the baseline fails beyond T ≈ 13, the NAC agent
#: holds to T ≈ 19.
PAPER_MARKS = {"paper: A3C fails (≈13)": 13, "paper: NAC holds (≈19)": 19}
SHOWN_T = (8, 10, 12, 13, 14, 15, 16, 17, 19, 21, 25, 30)


def _key(c: dict) -> dict:
    c.pop("model", None)
    return c


def _describe(c: dict) -> str:
    t, tr = c["task"], c["train"]
    steps = tr["iterations"] * tr["batch_size"] * t["n_steps"]
    steps = f"{steps / 1e6:.1f}M" if steps >= 1e5 else f"{steps:,}"
    parts = [f"{t['observation']} observation", t["algorithm"].upper(),
             f"T trained in [{t['min_instruction']}, {t['max_instruction']}]",
             f"{tr['seeds']} seeds × {tr['iterations']:,} updates × {tr['batch_size']} episodes × {t['n_steps']} steps "
             f"({steps} env-steps per seed)", f"learning rate {tr['learning_rate']:g}",
             f"{t['eval_episodes']} evaluation episodes per T"]
    if t["algorithm"] == "a3c":
        parts.insert(2, f"{t['workers']} workers")
    return ", ".join(parts)


def _spread(d: dict | None, fmt: str = ".2f") -> str:
    if not d or d.get("median") is None:
        return "n/a"
    return f"{num(d['median'], fmt)} [{num(d['min'], fmt)}, {num(d['max'], fmt)}]"


def _per_t(summary: dict, metric: str, T: int):
    per = summary.get("per_T") or {}
    return per[metric][per["T"].index(T)] if T in per.get("T", []) else None


def _setting(st: dict, k: int, ctx, labels: dict, order: tuple, shown: tuple, marks: dict) -> list[str]:
    runs = sorted(st["runs"], key=lambda r: order.index(r["config"]["model"]) if r["config"]["model"] in order else 99)
    t = st["config"]["task"]
    lo, hi = t["min_instruction"], t["max_instruction"]
    lines = [f"### {st['title']}", ""]
    rows = []
    for r in runs:
        s = r["summary"]
        rows.append([labels.get(r["config"]["model"], r["config"]["model"]), str(s["seeds"]),
                     _spread(s.get("on_time_train")), _spread(s.get("reward_train")),
                     f"{num(s['horizon']['median'], '.0f')} ({', '.join(map(str, s['horizons']))})",
                     _spread(s.get("on_time_beyond")), _spread(s.get("reward_beyond")), str(s["diverged"])])
    lines += [f"**Inside and beyond the training range** (median [min, max] over seeds; inside: mean over T in "
              f"[{lo}, {hi}]; beyond: mean over T from {hi + 1} to {t['eval_max_instruction']})", ""]
    lines += table(["agent", "seeds", f"on-time rate, T ∈ [{lo}, {hi}]", f"reward, T ∈ [{lo}, {hi}]",
                    "holds to T (per seed)", "on-time rate beyond", "reward beyond", "diverged"], rows)
    cols = [T for T in shown if T in (runs[0]["summary"].get("per_T") or {}).get("T", [])]
    for metric, text in (("on_time", "On-time rate"), ("reward", "Mean episode reward")):
        lines += [f"**{text} against the instruction T** (median over seeds)", ""]
        lines += table(["agent", *(f"T = {T}" for T in cols)],
                       [[labels.get(r["config"]["model"], r["config"]["model"])]
                        + [num(_per_t(r["summary"], metric, T), "+.2f" if metric == "reward" else ".2f") for T in cols]
                        for r in runs])
    evaluated = (runs[0]["summary"].get("per_T") or {}).get("T", [])
    fails = [T for T in (16, 20, 25) if T in evaluated]
    if fails:
        lines += ["**How the agents fail beyond the training range** (median rates: on time / early / late / never "
                  "arrived)", ""]
        lines += table(["agent", *(f"T = {T}" for T in fails)], [
            [labels.get(r["config"]["model"], r["config"]["model"])]
            + [" / ".join(num(_per_t(r["summary"], m, T), ".2f") for m in ("on_time", "early", "late", "timeout"))
               for T in fails] for r in runs])
    lines += _nac_lines(ctx, runs, labels)
    curves = []
    for r in runs:
        per = ctx.store.artifact(r["key"], "per_instruction")
        if per:
            curves.append({"label": labels.get(r["config"]["model"], r["config"]["model"]), "T": per["instructions"],
                           "reward": per["reward"], "on_time": per["on_time"]})
    name = figure_name("figure5_gridworld", k)
    if curves and figure5(ctx.folder / name, curves, (lo, hi), st["title"], marks):
        lines += [f"![Figure 5: a frame of the grid world; reward and on-time rate against T ({st['title']})]"
                  f"({name})", ""]
    name = figure_name("gridworld_training", k)
    if training_curves(ctx.folder / name, [{"label": labels.get(r["config"]["model"], r["config"]["model"]),
                                           "rows": ctx.store.curves(r["key"])} for r in runs], st["title"]):
        lines += [f"![Training curves ({st['title']})]({name})", ""]
    lines += _verdict_lines(runs, labels)
    return lines


def _nac_lines(ctx, runs, labels) -> list[str]:
    """The NAC's learned weights: a counter needs weights near ±1 (W ∈ [−1, 1])."""
    out = []
    for r in runs:
        weights = ctx.store.artifact(r["key"], "nac_weights")
        if not weights:
            continue
        w = np.asarray(weights, dtype=float)  # (S, out, in)
        seeds = r["config"]["train"]["seeds"]
        text = "; ".join(f"seed {r['config']['train'].get('first_seed', 0) + i}: max |W| = {np.abs(w[i]).max():.2f}"
                         + (f", W = ({', '.join(f'{v:+.2f}' for v in w[i, 0])})" if w.shape[2] <= 3 else "")
                         for i in range(seeds))
        out.append(f"- {labels.get(r['config']['model'], r['config']['model'])}: {text}.")
    if out:
        out = ["**NAC weights after training** (W = tanh(Ŵ)·σ(M̂); the counter variant's inputs are (instruction, "
               "1, previous n), a countdown would be about (+1, −0.1, +1)):", "", *out, ""]
    return out


def _verdict_lines(runs, labels) -> list[str]:
    h = {r["config"]["model"]: r["summary"]["horizon"]["median"] for r in runs}
    parts = [f"{labels.get(m, m)} holds to T = {num(v, '.0f')}" for m, v in h.items()]
    text = [PUBLISHED, "", "**Ours** (median over seeds): " + "; ".join(parts) + "."]
    if "a2c-lstm" in h and "a2c-nac" in h and None not in (h["a2c-lstm"], h["a2c-nac"]):
        d = h["a2c-nac"] - h["a2c-lstm"]
        text[-1] += (f" The paper-wired NAC agent extrapolates {d:g} instruction(s) further than the baseline."
                     if d > 0 else " The paper-wired NAC agent does **not** extrapolate further than the baseline "
                     f"here ({h['a2c-nac']:g} against {h['a2c-lstm']:g}).")
    return text + [""]


def section(ctx) -> list[str]:
    lines = ["## Figure 5: tracking time in a grid world (actor-critic agents with and without a NAC)", "", SETUP, ""]
    done = [r for r in ctx.runs if r.get("summary")]
    if not done:
        return lines + ["No finished gridworld run in the store (`nalm reproduce --only gridworld`).", ""]
    for k, st in enumerate(settings(done, _key, _describe)):
        lines += _setting(st, k, ctx, LABELS, MODELS, SHOWN_T, PAPER_MARKS)
    return lines
