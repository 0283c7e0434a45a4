"""The recurrent form of every unit: the unit applied to [x_t, h_{t−1}]."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nalm.errors import ConfigError, ShapeError

from . import get_unit


class RecurrentCell(nn.Module):
    """A recurrent cell around any registered unit: h_t = unit([x_t, h_{t−1}]).

    The unit maps ``input_size + hidden_size`` to ``hidden_size``. The initial state is 0 for additive units and
    1 for multiplicative ones (the identity element of their operation); ``initial_state`` overrides it.
    With ``num_seeds=S`` the cell holds S independent copies: x_t is (S, B, input_size), h is (S, B, hidden_size).

    >>> cell = RecurrentCell("nac", 3, 1)
    >>> outputs, h = cell.run(torch.ones(5, 10, 3))  # (B, T, in) -> (B, T, hidden), (B, hidden)
    """

    def __init__(self, unit: str, input_size: int, hidden_size: int, *, num_seeds: int | None = None,
                 initial_state: float | None = None, device=None, dtype=None, **options) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"RecurrentCell: {name} must be a positive integer, got {value!r}")
        self.unit_name = unit
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_seeds = num_seeds
        self.unit_options = options
        self.unit = get_unit(unit, input_size + hidden_size, hidden_size, num_seeds=num_seeds,
                             device=device, dtype=dtype, **options)
        if initial_state is None:
            initial_state = 1.0 if self.unit.multiplicative else 0.0  # an option may decide it (mcfc)
        self.initial_state = float(initial_state)

    def reset_parameters(self, generator=None) -> None:
        self.unit.reset_parameters(generator)

    def _lead(self) -> tuple[int, ...]:
        return () if self.num_seeds is None else (self.num_seeds,)

    def zero_state(self, batch_size: int) -> Tensor:
        p = next(self.parameters())
        return torch.full(self._lead() + (batch_size, self.hidden_size), self.initial_state,
                          device=p.device, dtype=p.dtype)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """One step: x (*S, B, input_size), h (*S, B, hidden_size) or None for the initial state."""
        if not isinstance(x, Tensor) or not (h is None or isinstance(h, Tensor)):
            raise ShapeError(f"RecurrentCell expects tensors, got x: {type(x).__name__}, h: {type(h).__name__}")
        if h is None:
            h = self.zero_state(x.shape[-2] if x.dim() >= 2 else 1)
        if x.shape[:-1] != h.shape[:-1] or x.shape[-1] != self.input_size:
            raise ShapeError(f"RecurrentCell expects x of shape {(*self._lead(), 'B', self.input_size)} and h of "
                             f"shape {(*self._lead(), 'B', self.hidden_size)}; got {tuple(x.shape)} and "
                             f"{tuple(h.shape)}")
        return self.unit(torch.cat([x, h], dim=-1))

    def run(self, xs: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run a sequence, batch first: xs (*S, B, T, input_size) -> outputs (*S, B, T, hidden), final h."""
        want = len(self._lead()) + 3
        if not isinstance(xs, Tensor) or xs.dim() != want or xs.shape[-1] != self.input_size or xs.shape[-2] < 1:
            shape = tuple(xs.shape) if isinstance(xs, Tensor) else type(xs).__name__
            raise ShapeError(f"RecurrentCell.run expects a sequence of shape "
                             f"{(*self._lead(), 'B', 'T', self.input_size)} with T >= 1, got {shape}")
        outputs = [self(xs[..., 0, :], h)]
        for t in range(1, xs.shape[-2]):
            outputs.append(self(xs[..., t, :], outputs[-1]))
        return torch.stack(outputs, dim=-2), outputs[-1]

    @torch.no_grad()
    def diagnostics(self, x: Tensor) -> dict[str, Tensor]:
        """Per seed: the recurrent block W_h of the unit's weight (the columns that read h_{t−1}), its mean
        diagonal and largest off-diagonal magnitude. An exact accumulator of a sum has W_h = I (diagonal 1,
        off-diagonals 0). Empty for a unit without a single weight matrix. ``x`` is not used."""
        w = getattr(self.unit, "weight", None)
        if not isinstance(w, Tensor):
            return {}
        w_h = w.detach()[..., :, self.input_size:]  # (*S, hidden, hidden)
        eye = torch.eye(self.hidden_size, dtype=torch.bool, device=w_h.device)
        lead = len(self._lead())
        off = w_h.masked_fill(eye, 0).abs().flatten(lead)
        return {"recurrent_diagonal_mean": w_h.diagonal(dim1=-2, dim2=-1).mean(-1),
                "recurrent_offdiagonal_abs_max": off.amax(-1) if off.shape[-1] else torch.zeros_like(off[..., 0])}

    def seed_module(self, i: int) -> "RecurrentCell":
        """A single-seed copy of seed ``i``."""
        single = RecurrentCell.__new__(RecurrentCell)
        nn.Module.__init__(single)
        single.__dict__.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        single.num_seeds = None
        single.unit = self.unit.seed_module(i)
        return single

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"initial_state={self.initial_state}")
