"""The grid world's figures (matplotlib's Agg canvas, no pyplot): Figure 5 of Trask et al. (2018, §4.5) and the
training curves. Plain data in, a PNG out; the report (:mod:`nalm.experiments.gridworld`) gathers the data.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from .env import TimeGridEnv


def environment_frames(seed: int = 3, instruction: int = 10) -> tuple[list[np.ndarray], list[str]]:
    """Frames of one episode of the scripted on-time walk: the start, the wait next to the target, the arrival at T."""
    env = TimeGridEnv(render_mode="rgb_array")
    env.reset(seed=seed, options={"instruction": instruction})
    frames, titles = [env.render()], [f"t = 0: instruction T = {instruction}"]
    t, terminated = 0, False
    while not terminated:
        _, _, terminated, _, info = env.step(env.oracle_action())
        t += 1
        if terminated or (info["distance"] == 1 and t == instruction - 1):
            frames.append(env.render())
            titles.append(f"t = {t}: on the target" if terminated else f"t = {t}: waiting next to it")
    return frames, titles


def figure5(path: Path, curves: list[dict], train_range: tuple[int, int], title: str,
            marks: dict[str, int] | None = None) -> bool:
    """Figure 5: frames of the environment (top); reward and on-time rate against T (bottom), one line per agent.

    ``curves``: {"label", "T": (K,), "reward": (S, K), "on_time": (S, K)} per agent; the median over seeds is drawn
    with the seeds' range shaded. ``marks``: vertical dotted lines with labels (the paper's T of failure). False
    when matplotlib is missing.
    """
    from nalm.engine.reporting import colors, new_figure

    fig = new_figure(figsize=(10, 7.5))
    if fig is None:
        return False
    frames, titles = environment_frames()
    grid = fig.add_gridspec(2, 2 * len(frames), height_ratios=[1, 1.5], hspace=0.22, wspace=0.9)
    for k, (frame, text) in enumerate(zip(frames, titles)):
        ax = fig.add_subplot(grid[0, 2 * k:2 * k + 2])
        ax.imshow(frame, interpolation="nearest")
        ax.set_title(text, fontsize=9)
        ax.set_axis_off()
    cmap = colors("tab10")
    half = len(frames)
    for col, (metric, ylabel, ylim) in enumerate((("reward", "mean episode reward", (-1.05, 1.05)),
                                                  ("on_time", "on-time rate (arrived at t = T)", (-0.03, 1.03)))):
        ax = fig.add_subplot(grid[1, col * half:(col + 1) * half])
        ax.axvspan(train_range[0] - 0.5, train_range[1] + 0.5, color="0.88", label="training range of T")
        for (name, T) in (marks or {}).items():
            ax.axvline(T, color="0.4", ls=":", lw=1)
            ax.text(T, ylim[1] - 0.02 * (ylim[1] - ylim[0]), f"{name} ", rotation=90, fontsize=7, color="0.3",
                    va="top", ha="right")
        for i, c in enumerate(curves):
            values = np.asarray(c[metric], dtype=float)
            x = np.asarray(c["T"])
            ax.plot(x, np.nanmedian(values, 0), color=cmap(i % 10), lw=1.8, marker="o", ms=3,
                    label=f"{c['label']} ({values.shape[0]} seeds)")
            if values.shape[0] > 1:
                ax.fill_between(x, np.nanmin(values, 0), np.nanmax(values, 0), color=cmap(i % 10), alpha=0.18)
        ax.set_ylim(*ylim)
        ax.set_xlabel("instruction T")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if col == 0:
            handles, texts = ax.get_legend_handles_labels()
            fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.035), ncol=len(handles),
                       fontsize=8, frameon=False)
    fig.suptitle("Figure 5: tracking time in a grid world (median over seeds, band: min–max)\n"
                 + "\n".join(textwrap.wrap(title, 120)), fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return True


def training_curves(path: Path, runs: list[dict], title: str) -> bool:
    """Training episode reward and on-time rate against environment steps per seed, median over seeds, one line per
    agent. ``runs``: {"label", "rows": curve rows with "seed", "env_steps", "episode_reward", "on_time"}."""
    from nalm.engine.reporting import colors, new_figure

    fig = new_figure(figsize=(10, 4.2))
    if fig is None:
        return False
    cmap = colors("tab10")
    axes = [fig.add_subplot(1, 2, k + 1) for k in range(2)]
    for i, run in enumerate(runs):
        by_step: dict[int, dict[str, list]] = {}
        for r in run["rows"]:
            d = by_step.setdefault(int(r["env_steps"]), {"episode_reward": [], "on_time": []})
            for m in d:
                v = r.get(m)
                d[m].append(np.nan if v is None else float(v))
        steps = sorted(by_step)
        for ax, metric in zip(axes, ("episode_reward", "on_time")):
            y = [np.nanmedian(by_step[s][metric]) if np.isfinite(by_step[s][metric]).any() else np.nan for s in steps]
            ax.plot(np.asarray(steps) / 1e6, y, color=cmap(i % 10), lw=1.4, label=run["label"])
    for ax, label in zip(axes, ("training episode reward", "training on-time rate")):
        ax.set_xlabel("environment steps per seed (millions)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Training (median over seeds; T drawn from the training range)\n"
                 + "\n".join(textwrap.wrap(title, 120)), fontsize=9)
    fig.subplots_adjust(top=0.8, wspace=0.25)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return True
