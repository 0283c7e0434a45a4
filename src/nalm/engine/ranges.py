"""Sampling ranges: one interval or a union of intervals, e.g. ``"1,2"``, ``"-2,-1"`` or ``"-2,-1:1,2"``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nalm.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A union of disjoint intervals [low, high), sampled uniformly by length.

    >>> Range.parse("-2,-1:1,2").intervals
    ((-2.0, -1.0), (1.0, 2.0))
    """

    intervals: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ConfigError("a range needs at least one interval")
        prev_high = -np.inf
        for low, high in self.intervals:
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ConfigError(f"interval [{low}, {high}] must be finite with low < high")
            if low < prev_high:
                raise ConfigError(f"intervals of a range must be sorted and disjoint, got {self}")
            prev_high = high

    @classmethod
    def parse(cls, value: "str | Range | tuple | list") -> "Range":
        """Parse ``"low,high"`` or ``"low,high:low,high:..."``; also accepts (low, high) or a Range."""
        if isinstance(value, Range):
            return value
        if isinstance(value, (tuple, list)):
            if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
                return cls(((float(value[0]), float(value[1])),))
            return cls(tuple((float(lo), float(hi)) for lo, hi in value))
        try:
            parts = [p.split(",") for p in str(value).replace(" ", "").split(":")]
            intervals = tuple((float(lo), float(hi)) for lo, hi in parts)
        except ValueError:
            raise ConfigError(f"cannot parse range {value!r}: expected 'low,high' or 'low,high:low,high' "
                              f"(e.g. '1,2' or '-2,-1:1,2')") from None
        return cls(intervals)

    def __str__(self) -> str:
        return ":".join(f"{lo:g},{hi:g}" for lo, hi in self.intervals)

    @property
    def length(self) -> float:
        return float(sum(hi - lo for lo, hi in self.intervals))

    @property
    def low(self) -> float:
        return self.intervals[0][0]

    @property
    def high(self) -> float:
        return self.intervals[-1][1]

    def contains_zero(self) -> bool:
        return any(lo <= 0 <= hi for lo, hi in self.intervals)

    def transform(self, u: np.ndarray, base: float = 0.0) -> np.ndarray:
        """Map uniforms u in [base, base + 1) to this range, in place where possible (one uniform per value)."""
        if len(self.intervals) == 1:
            lo, hi = self.intervals[0]
            if (lo, hi) != (base, base + 1):
                u *= hi - lo
                u += lo - base * (hi - lo)
            return u
        if base:
            u -= base
        lengths = np.array([hi - lo for lo, hi in self.intervals])
        cum = np.concatenate([[0.0], np.cumsum(lengths)])
        lows = np.array([lo for lo, _ in self.intervals])
        t = u * cum[-1]
        k = np.clip(np.searchsorted(cum, t, side="right") - 1, 0, len(lengths) - 1)
        return (lows[k] + (t - cum[k])).astype(u.dtype, copy=False)

    def sample(self, rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
        """Uniform samples of the given shape from one numpy generator."""
        return self.transform(rng.random(shape, dtype=dtype))


def uniform_1_2(bitgens, shape: tuple[int, ...], buffer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill (S, *shape) float32 values uniform on [1, 2), seed i from bit generator i alone.

    The fast path of training data: 23 random bits of each 32-bit half of the generator's raw 64-bit output become
    the mantissa of a float in [1, 2) (exponent bits 0x3F8), with no float arithmetic at all. About twice as fast as
    ``Generator.random(dtype=float32)``, which draws one 32-bit word per value as well but converts it.
    ``buffer`` (uint32, (S, prod(shape))) is reused when given. Returns the values (a view of the buffer) and
    the buffer.
    """
    n = int(np.prod(shape))
    if buffer is None or buffer.shape != (len(bitgens), n):
        buffer = np.empty((len(bitgens), n), dtype=np.uint32)
    for i, g in enumerate(bitgens):
        np.right_shift(g.random_raw((n + 1) // 2).view(np.uint32)[:n], 9, out=buffer[i])
    np.bitwise_or(buffer, np.uint32(0x3F800000), out=buffer)
    return buffer.view(np.float32).reshape((len(bitgens),) + tuple(shape)), buffer
