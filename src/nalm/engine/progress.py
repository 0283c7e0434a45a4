"""Progress for people: a per-run bar, one bar for a whole sweep, durations written as people read them, and
TensorBoard writers (one TensorBoard run per seed).

Bars are drawn only on a terminal and only when tqdm is installed (the ``progress`` extra); otherwise they are silent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from nalm.errors import ConfigError

TENSORBOARD_MISSING = "--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard"


def check_tensorboard() -> None:
    """ConfigError unless the tensorboard package is importable (checked when a run is configured, not when it
    ends)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(TENSORBOARD_MISSING)


def tensorboard_writers(folder: str | Path, seeds) -> list:
    """One ``torch.utils.tensorboard.SummaryWriter`` per seed (``folder/seed<s>``: TensorBoard shows each as a run)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(TENSORBOARD_MISSING) from None
    return [SummaryWriter(log_dir=str(Path(folder) / f"seed{s}")) for s in seeds]


def sweep_bar(total: float, desc: str, enabled: bool):
    """A tqdm bar over estimated core-seconds (``total``) with a free-text postfix, or None off a terminal."""
    if not (enabled and sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=round(total, 1), desc=desc, unit="s", dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")


class ProgressBar:
    """A tqdm bar on a terminal (when tqdm is installed); silent otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def duration(seconds: float) -> str:
    """A duration for people: "45 s", "12 min", "3 h 20 min", "2.5 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{seconds / 86400:.1f} days"
