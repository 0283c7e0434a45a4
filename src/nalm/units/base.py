"""The base class of every unit: shaped like ``nn.Linear``, with an optional seed axis."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nalm.errors import ConfigError, ShapeError

Generators = torch.Generator | Sequence[torch.Generator] | None


class ArithmeticUnit(nn.Module):
    """Base of all nalm units.

    Subclasses create their parameters with :meth:`_parameter`, which prepends the seed axis, implement
    ``_forward(x)`` for x of shape (*S, B, in), and list their options (constructor arguments stored as
    attributes of the same name) in ``options``. With ``num_seeds=None`` the module is an ordinary layer
    mapping (*, in) -> (*, out); with ``num_seeds=S`` it holds S independent copies and maps (S, *, in) -> (S, *, out).
    """

    unit_name = "?"  # set by @register_unit
    options: tuple[str, ...] = ()
    #: The recurrent form's zero state: 1 for units whose identity element is multiplicative.
    multiplicative = False

    def __init__(self, in_features: int, out_features: int, *, num_seeds: int | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{type(self).__name__}: {arg} must be a positive integer, got {value!r}")
        if num_seeds is not None and (not isinstance(num_seeds, int) or isinstance(num_seeds, bool) or num_seeds < 1):
            raise ConfigError(f"{type(self).__name__}: num_seeds must be a positive integer or None, got {num_seeds!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.num_seeds = num_seeds
        self._factory = {"device": device, "dtype": dtype}

    # -- parameters -------------------------------------------------------------------------------------------
    @property
    def seed_shape(self) -> tuple[int, ...]:
        return () if self.num_seeds is None else (self.num_seeds,)

    def _parameter(self, *shape: int) -> nn.Parameter:
        return nn.Parameter(torch.empty(self.seed_shape + shape, **self._factory))

    def _init(self, param: Tensor, fill: Callable[[Tensor, torch.Generator | None], object],
              generator: Generators) -> None:
        """Initialise ``param`` in place with ``fill(tensor, generator)``.

        ``generator`` may be one generator, or one per seed: then seed i is drawn from its own stream alone,
        so that seed i of a stacked module starts exactly where a single model drawn from that stream would.
        """
        with torch.no_grad():
            if generator is None or isinstance(generator, torch.Generator):
                fill(param, generator)
                return
            gens = list(generator)
            if self.num_seeds is None or len(gens) != self.num_seeds:
                raise ConfigError(f"{type(self).__name__}: got {len(gens)} generators for seed shape {self.seed_shape}")
            for p, g in zip(param, gens):
                fill(p, g)

    def _uniform(self, param: Tensor, low: float, high: float, generator: Generators) -> None:
        self._init(param, lambda t, g: t.uniform_(low, high, generator=g), generator)

    def _glorot(self, param: Tensor, generator: Generators) -> None:
        """Glorot (Xavier) uniform over this unit's fan-in and fan-out."""
        a = math.sqrt(6.0 / (self.in_features + self.out_features))
        self._uniform(param, -a, a, generator)

    def reset_parameters(self, generator: Generators = None) -> None:
        """Draw the parameters afresh, from ``generator`` (one per seed with a seed axis) or torch's global one."""
        raise NotImplementedError

    # -- forward ----------------------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise ShapeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:
            raise ShapeError(f"{name} holds {dtype} parameters; got input of dtype {x.dtype}")
        if self.num_seeds is None:
            if x.dim() < 1 or x.shape[-1] != self.in_features:
                raise ShapeError(f"{name} expects input of shape (*, {self.in_features}) "
                                 f"(in_features={self.in_features}), got {tuple(x.shape)}")
        elif x.dim() < 2 or x.shape[0] != self.num_seeds or x.shape[-1] != self.in_features:
            raise ShapeError(f"{name} with num_seeds={self.num_seeds} expects input of shape "
                             f"({self.num_seeds}, *, {self.in_features}), got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """(*, in) -> (*, out); with a seed axis (S, *, in) -> (S, *, out). Wrong shapes or dtypes: ShapeError."""
        self._check_input(x)
        # Flatten the batch dimensions to one, so _forward sees (*S, B, in).
        lead = x.shape[:-1]
        x = x.reshape(self.seed_shape + (-1, self.in_features))
        return self._forward(x).reshape(lead + (self.out_features,))

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    # -- what explains a result -------------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self, x: Tensor) -> dict[str, Tensor]:
        """Per-seed values (*S,) that a unit's behaviour depends on, given inputs x (*S, B, in) it has just seen:
        here the mean and largest magnitude of its weight W, where it has one. Units add their own (the NALU: its
        gate and each path's weights). The engine stores them with every evaluation (``nalm.engine.diagnostics``).
        """
        w = getattr(self, "weight", None)
        if not isinstance(w, Tensor):
            return {}
        a = w.detach().abs().flatten(len(self.seed_shape))
        return {"weight_abs_mean": a.mean(-1), "weight_abs_max": a.amax(-1)}

    # -- the seed axis ----------------------------------------------------------------------------------------
    def seed_module(self, i: int) -> "ArithmeticUnit":
        """An ordinary single-seed copy of seed ``i`` (its parameters copied, not shared)."""
        if self.num_seeds is None:
            raise ConfigError(f"{type(self).__name__} has no seed axis (num_seeds=None)")
        if not -self.num_seeds <= i < self.num_seeds:
            raise ConfigError(f"seed index {i} out of range for num_seeds={self.num_seeds}")
        p = next(self.parameters())
        single = type(self)(self.in_features, self.out_features, num_seeds=None, device=p.device, dtype=p.dtype,
                            **{k: getattr(self, k) for k in self.options})
        single.load_state_dict({k: v[i] for k, v in self.state_dict().items()})
        return single

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}", f"out_features={self.out_features}"]
        if self.num_seeds is not None:
            parts.append(f"num_seeds={self.num_seeds}")
        parts += [f"{k}={getattr(self, k)!r}" for k in self.options]
        return ", ".join(parts)


def check_positive(unit: str, name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ConfigError(f"{unit}: {name} must be a positive finite number, got {value!r}")
    return float(value)


def check_choice(unit: str, name: str, value: object, choices: Sequence[object]) -> object:
    if value not in choices:
        raise ConfigError(f"{unit}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
