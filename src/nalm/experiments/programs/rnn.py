"""The recurrent regressors of program evaluation: the shared base (one prediction per sequence, read at the final
step, pad steps skipped), the UGRNN, the LSTM and the NALU configured by an LSTM. See :mod:`.models` for the
registry and the conventions every model follows."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nalm import functional as F
from nalm.errors import ConfigError, ShapeError
from nalm.nn.models import SeedRNN
from nalm.units import get_unit
from nalm.units.base import Generators


def check_int(owner: str, name: str, value, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    return value


class SequenceRegressor(nn.Module):
    """Base: shape checks, the pad mask, and a masked state update shared by the models."""

    def __init__(self, input_size: int, *, num_seeds: int, pad_channel: int | None = None):
        super().__init__()
        name = type(self).__name__
        self.input_size = check_int(name, "input_size", input_size)
        self.num_seeds = check_int(name, "num_seeds", num_seeds)
        if pad_channel is not None and not (isinstance(pad_channel, int) and 0 <= pad_channel < input_size):
            raise ConfigError(f"{name}: pad_channel must be None or a channel in [0, {input_size}), "
                              f"got {pad_channel!r}")
        self.pad_channel = pad_channel

    def _mask(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        """(S or 1, B, T) bool, True on real steps; None when every step is real."""
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] not in (1, self.num_seeds) \
                or x.shape[-1] != self.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"{name} expects input (S={self.num_seeds} or 1, B, T, {self.input_size}), got {shape}")
        if mask is None and self.pad_channel is not None:
            mask = x[..., self.pad_channel] < 0.5
        if mask is not None and (mask.dim() != 3 or mask.shape[1:] != x.shape[1:3]):
            raise ShapeError(f"{name}: mask must be (S or 1, B, T) = (*, {x.shape[1]}, {x.shape[2]}), "
                             f"got {tuple(mask.shape)}")
        return mask

    @staticmethod
    def _keep(m: Tensor | None, t: int, new: Tensor, old: Tensor) -> Tensor:
        """new where step t is real, else old. m (S or 1, B, T); new/old (S, B, ...)."""
        if m is None:
            return new
        mt = m[:, :, t].reshape(m.shape[:2] + (1,) * (new.dim() - 2))
        return torch.where(mt, new, old)


def lstm_step(rnn: SeedRNN, gi: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step with SeedRNN's parameters; gi = x_t W_ihᵀ + b_ih already computed. (S, B, 4H) -> (S, B, H)."""
    i, f, g, o = (gi + h @ rnn.weight_hh.transpose(-1, -2) + rnn.bias_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def input_gates(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (S or 1, B, T, F) @ weight (S, G, F)ᵀ (+ bias (S, 1, G)) -> (S, B, T, G), all steps at once."""
    out = x @ weight.unsqueeze(-3).transpose(-1, -2)
    return out if bias is None else out + bias.unsqueeze(-3)


class UGRNN(SequenceRegressor):
    """Update-gate RNN (Collins, Sohl-Dickstein & Sussillo, "Capacity and trainability in recurrent neural
    networks", ICLR 2017), as TensorFlow's ``UGRNNCell``, with a linear read-out of the final state:

        [g_act, c_act] = W [x_t; h_{t−1}] + b;  g = σ(g_act + forget_bias);  c = tanh(c_act)
        h_t = g ⊙ h_{t−1} + (1 − g) ⊙ c

    Init: W Glorot-uniform over (F + H) -> 2H, b = 0 (TensorFlow's defaults); forget_bias = 1.
    """

    def __init__(self, input_size: int, hidden_size: int = 64, *, num_seeds: int, pad_channel: int | None = None,
                 forget_bias: float = 1.0):
        super().__init__(input_size, num_seeds=num_seeds, pad_channel=pad_channel)
        self.hidden_size = check_int("UGRNN", "hidden_size", hidden_size)
        self.forget_bias = float(forget_bias)
        H, S = hidden_size, num_seeds
        self.weight_x = nn.Parameter(torch.empty(S, 2 * H, input_size))  # rows: gate, candidate
        self.weight_h = nn.Parameter(torch.empty(S, 2 * H, H))
        self.bias = nn.Parameter(torch.empty(S, 1, 2 * H))
        self.readout = get_unit("linear", H, 1, num_seeds=S, bias=True)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * self.num_seeds
        a = math.sqrt(6.0 / (self.input_size + 3 * self.hidden_size))  # fan_in F + H, fan_out 2H
        with torch.no_grad():
            for i, g in enumerate(gens):
                self.weight_x[i].uniform_(-a, a, generator=g)
                self.weight_h[i].uniform_(-a, a, generator=g)
            self.bias.zero_()
        self.readout.reset_parameters(generator)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._mask(x, mask)
        gx = input_gates(x, self.weight_x, self.bias)  # (S, B, T, 2H)
        h = x.new_zeros(self.num_seeds, x.shape[1], self.hidden_size)
        w_h = self.weight_h.transpose(-1, -2)
        for t in range(x.shape[2]):
            g_act, c_act = (gx[:, :, t] + h @ w_h).chunk(2, dim=-1)
            g = torch.sigmoid(g_act + self.forget_bias)
            h = self._keep(m, t, g * h + (1 - g) * torch.tanh(c_act), h)
        return self.readout(h)


class LSTMRegressor(SequenceRegressor):
    """An LSTM (:class:`nalm.nn.models.SeedRNN`'s gates, parameters and initialisation) and a linear read-out of
    the final hidden state, skipping pad steps."""

    def __init__(self, input_size: int, hidden_size: int = 64, *, num_seeds: int, pad_channel: int | None = None):
        super().__init__(input_size, num_seeds=num_seeds, pad_channel=pad_channel)
        self.hidden_size = check_int("LSTMRegressor", "hidden_size", hidden_size)
        self.rnn = SeedRNN("lstm", input_size, hidden_size, num_seeds=num_seeds)
        self.readout = get_unit("linear", hidden_size, 1, num_seeds=num_seeds, bias=True)

    def reset_parameters(self, generator: Generators = None) -> None:
        self.rnn.reset_parameters(generator)
        self.readout.reset_parameters(generator)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._mask(x, mask)
        gi = input_gates(x, self.rnn.weight_ih, self.rnn.bias_ih)  # (S, B, T, 4H)
        h = x.new_zeros(self.num_seeds, x.shape[1], self.hidden_size)
        c = torch.zeros_like(h)
        for t in range(x.shape[2]):
            h_new, c_new = lstm_step(self.rnn, gi[:, :, t], h, c)
            h, c = self._keep(m, t, h_new, h), self._keep(m, t, c_new, c)
        return self.readout(h)


# -- the NALU configured by an LSTM -------------------------------------------------------------------------

CELLS = ("nalu", "nau", "nau-nmu")
GATES = ("input", "hidden")


class HyperNALU(SequenceRegressor):
    """A NALU "configured by" an LSTM (Trask et al. 2018, §4.4): its parameters are functions of the LSTM's
    hidden state at each step.

    Wiring, at step t (z_t = [v_t, y_{t−1}], 2 values; y_0 = 0; v_t the step's value channel):

        h_t = LSTM(x_t, h_{t−1})              x_t the step's input, its value channel zeroed unless
                                               ``controller_sees_value`` (see below)
        p_t = A h_t + b                        the hypernetwork: one linear map per seed
        y_t = cell(z_t; p_t)                   one output; the prediction is y_T

    ``cell="nalu"`` (the paper's): p_t = (Ŵ, M̂, G) of shape (1, 2) each; W = tanh(Ŵ) ⊙ σ(M̂),
    y = g a + (1 − g) m with a = W z, m = exp(W log(|z| + ε)) (:func:`nalm.functional.nalu`, tied weights).
    The gate is g = σ(G z) (``gate="input"``, the NALU's own) or g = σ(p_g) (``gate="hidden"``: one logit from
    h_t, independent of the magnitudes in z). ``cell="nau"``: y = W z with W = clamp(p, −1, 1) (Madsen &
    Johansen's NAU weight range); ``cell="nau-nmu"``: y = g (W_a z) + (1 − g) NMU(z; W_m), W_a = clamp(p_a, −1, 1),
    W_m = clamp(p_m, 0, 1).

    The controller does not see the value channel by default: it configures the unit from the program's tokens,
    so its state, and thus the unit's weights, are the same for 2-digit and 4-digit numbers, which is what lets
    the unit extrapolate. ``controller_sees_value=True`` feeds it the whole step (needed to decide an
    if-statement's comparison, at the cost of the controller meeting unseen magnitudes).

    ``gate_bias`` (gate="hidden" only) is added to the gate logit's initial bias (> 0 starts nearer the additive
    path); ``eps`` is the NALU's log-path ε. A known difficulty of the NALU here: on steps without a number
    z = [0, y], and on the first steps z = [0, 0], so the log path sees log ε ≈ −16 and exp(W log(|z| + ε)) is a
    trainable constant, a local optimum the NAU and NMU do not have; and any gate leak 1 − g multiplies a product
    that grows with the square of the magnitudes, so extrapolating needs g within ~10⁻⁶ of 1. What made the NALU
    extrapolate addition in our runs (:mod:`nalm.experiments.programs`): ``gate="hidden"`` with
    ``gate_bias=10`` (it starts on the additive path), ``eps=0.5`` and the paper's RMSE loss.
    """

    def __init__(self, input_size: int, hidden_size: int = 64, *, num_seeds: int, pad_channel: int | None = None,
                 value_channel: int = -1, cell: str = "nalu", gate: str = "input",
                 controller_sees_value: bool = False, eps: float = 1e-7, gate_bias: float = 0.0):
        super().__init__(input_size, num_seeds=num_seeds, pad_channel=pad_channel)
        self.hidden_size = check_int("HyperNALU", "hidden_size", hidden_size)
        if not isinstance(value_channel, int) or not -input_size <= value_channel < input_size:
            raise ConfigError(f"HyperNALU: value_channel must be a channel of the {input_size} inputs, got "
                              f"{value_channel!r}")
        if cell not in CELLS:
            raise ConfigError(f"HyperNALU: cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if gate not in GATES:
            raise ConfigError(f"HyperNALU: gate must be one of {', '.join(GATES)}, got {gate!r}")
        if not (isinstance(eps, float) and 0 < eps < 1):
            raise ConfigError(f"HyperNALU: eps must be a float in (0, 1), got {eps!r}")
        self.value_channel = value_channel % input_size
        self.cell, self.gate, self.eps, self.gate_bias = cell, gate, eps, float(gate_bias)
        self.controller_sees_value = bool(controller_sees_value)
        # hypernetwork outputs: two (1, 2) weight matrices, and the gate (G (1, 2) or one logit) if gated
        self.hyper_sizes = (2,) if cell == "nau" else (2, 2, 2 if gate == "input" else 1)
        keep = torch.ones(input_size)
        if not self.controller_sees_value:
            keep[self.value_channel] = 0
        self.register_buffer("controller_keep", keep, persistent=False)
        self.controller = SeedRNN("lstm", input_size, hidden_size, num_seeds=num_seeds)
        self.hyper = get_unit("linear", hidden_size, sum(self.hyper_sizes), num_seeds=num_seeds, bias=True)
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        self.controller.reset_parameters(generator)
        self.hyper.reset_parameters(generator)
        if self.cell != "nau" and self.gate == "hidden":
            with torch.no_grad():
                self.hyper.b[..., -1] += self.gate_bias  # the gate logit's bias: > 0 opens the additive path

    def unit_step(self, z: Tensor, p: Tensor) -> Tensor:
        """The configured unit: z (S, B, 2), hypernetwork output p (S, B, P) -> y (S, B, 1)."""
        z = z.unsqueeze(-2)  # (S, B, 1, 2): a batch of one row per (seed, sequence)
        parts = [q.unsqueeze(-2) for q in p.split(self.hyper_sizes, dim=-1)]  # (S, B, 1, size) each
        if self.cell == "nau":
            y = F.linear(z, parts[0].clamp(-1, 1))
        else:
            w1, w2, gate = parts
            g = torch.sigmoid(F.linear(z, gate) if self.gate == "input" else gate)  # (S, B, 1, 1)
            if self.cell == "nalu":
                w = F.nac_weight(w1, w2)
                y = F.nalu(z, w, w, g, self.eps)
            else:
                y = F.gated_mix(g, F.linear(z, w1.clamp(-1, 1)), F.nmu(z, w2.clamp(0, 1)))
        return y.squeeze(-2)  # (S, B, 1, 1) -> (S, B, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = self._mask(x, mask)
        rnn = self.controller
        gi = input_gates(x * self.controller_keep, rnn.weight_ih, rnn.bias_ih)  # (S, B, T, 4H)
        values = x[..., self.value_channel].expand(self.num_seeds, -1, -1)  # (S, B, T)
        h = x.new_zeros(self.num_seeds, x.shape[1], self.hidden_size)
        c, y = torch.zeros_like(h), x.new_zeros(self.num_seeds, x.shape[1], 1)
        for t in range(x.shape[2]):
            h_new, c_new = lstm_step(rnn, gi[:, :, t], h, c)
            y_new = self.unit_step(torch.cat([values[:, :, t:t + 1], y], dim=-1), self.hyper(h_new))
            h, c, y = self._keep(m, t, h_new, h), self._keep(m, t, c_new, c), self._keep(m, t, y_new, y)
        return y
