"""Networks with a seed axis: two arithmetic units, MLP baselines, and their recurrent forms.

Model names (``build_model``):

- ``"<unit>-<unit>"``, e.g. ``nau-nmu``, ``nalu-nalu``, ``nac-nac_mul``: two registered units, in -> hidden -> out.
  A single unit name (``nau``) means the same unit twice; ``linear`` is the two-layer linear network.
- an activation name (``relu6``, ``relu``, ``tanh``, ``sigmoid``, ``softsign``, ``selu``, ``elu``, ...): the MLP
  baseline in -> hidden -> out with biases and that nonlinearity on the hidden layer.
- recurrent (``recurrent=True``): ``"<unit>-<unit>"`` is the first unit's RecurrentCell over the sequence
  followed by the second unit on the final state; ``lstm``, ``gru``, ``rnn-tanh``, ``rnn-relu`` are the classic
  cells followed by a linear output layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .recurrent import RecurrentCell
from .units import get_unit, list_units
from .units.base import ArithmeticUnit, Generators

#: The nonlinearities of the MLP baselines (the 15 of Figure 1 plus the paper's Table 1 baselines).
ACTIVATIONS = {
    "relu6": nn.ReLU6, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign,
    "selu": nn.SELU, "elu": nn.ELU, "hardtanh": nn.Hardtanh, "tanhshrink": nn.Tanhshrink,
    "hardshrink": nn.Hardshrink, "leakyrelu": nn.LeakyReLU, "softshrink": nn.Softshrink,
    "softplus": nn.Softplus, "prelu": None,  # PReLU has a learned slope per seed: see SeedPReLU
    # nn.Threshold needs its two constants; the paper gives none: y = x if x > 0.5 else 0.
    "threshold": lambda: nn.Threshold(0.5, 0.0),
}
RECURRENT_BASELINES = ("lstm", "gru", "rnn-tanh", "rnn-relu")


class SeedPReLU(nn.Module):
    """PReLU with one learned slope per seed (init 0.25, as nn.PReLU). Input (*S, B, features)."""

    def __init__(self, num_seeds: int | None, device=None, dtype=None):
        super().__init__()
        shape = (1, 1) if num_seeds is None else (num_seeds, 1, 1)
        self.weight = nn.Parameter(torch.full(shape, 0.25, device=device, dtype=dtype))

    def reset_parameters(self, generator: Generators = None) -> None:
        with torch.no_grad():
            self.weight.fill_(0.25)

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def make_activation(name: str, num_seeds: int | None, device=None, dtype=None) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose from: {', '.join(ACTIVATIONS)}")
    if name == "prelu":
        return SeedPReLU(num_seeds, device=device, dtype=dtype)
    return ACTIVATIONS[name]()


class Sequential(nn.Sequential):
    """nn.Sequential whose ``reset_parameters(generator)`` re-initialises every layer that has one."""

    def reset_parameters(self, generator: Generators = None) -> None:
        for layer in self:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters(generator)


def mlp(sizes: list[int], activation: str, *, num_seeds: int | None = None, device=None, dtype=None) -> Sequential:
    """An MLP with biases over the seed axis: Linear -> act -> ... -> Linear (linear output)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(make_activation(activation, num_seeds, device, dtype))
        layers.append(get_unit("linear", a, b, num_seeds=num_seeds, bias=True, device=device, dtype=dtype))
    return Sequential(*layers)


class SeedRNN(nn.Module):
    """LSTM, GRU or Elman RNN (tanh or ReLU) with a seed axis, batch first: (*S, B, T, in) -> (*S, B, hidden).

    Gate equations as in ``torch.nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, and their initialisation U[−1/√H, 1/√H].
    Returns the final hidden state.
    """

    GATES = {"lstm": 4, "gru": 3, "rnn-tanh": 1, "rnn-relu": 1}

    def __init__(self, kind: str, input_size: int, hidden_size: int, *, num_seeds: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        self.kind, self.hidden_size, self.num_seeds = kind, hidden_size, num_seeds
        gates = self.GATES[kind] * hidden_size
        lead = () if num_seeds is None else (num_seeds,)
        f = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(lead + (gates, input_size), **f))
        self.weight_hh = nn.Parameter(torch.empty(lead + (gates, hidden_size), **f))
        self.bias_ih = nn.Parameter(torch.empty(lead + (1, gates), **f))
        self.bias_hh = nn.Parameter(torch.empty(lead + (1, gates), **f))
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        gens = generator if isinstance(generator, (list, tuple)) else None
        with torch.no_grad():
            for p in self.parameters():
                if gens is None:
                    p.uniform_(-bound, bound, generator=generator)
                else:
                    for p_i, g in zip(p, gens):
                        p_i.uniform_(-bound, bound, generator=g)

    def forward(self, xs: Tensor) -> Tensor:
        h = xs.new_zeros(xs.shape[:-2] + (self.hidden_size,))
        c = torch.zeros_like(h)
        gi_all = xs @ self.weight_ih.unsqueeze(-3).transpose(-1, -2) + self.bias_ih.unsqueeze(-3)  # (*S,B,T,G)
        w_hh = self.weight_hh.transpose(-1, -2)
        for t in range(xs.shape[-2]):
            gi, gh = gi_all[..., t, :], h @ w_hh + self.bias_hh
            if self.kind == "lstm":
                i, f, g, o = (gi + gh).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            elif self.kind == "gru":
                ir, iz, in_ = gi.chunk(3, dim=-1)
                hr, hz, hn = gh.chunk(3, dim=-1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(in_ + r * hn) + z * h
            else:
                pre = gi + gh
                h = torch.tanh(pre) if self.kind == "rnn-tanh" else torch.relu(pre)
        return h


class UnitRNN(nn.Module):
    """A unit's RecurrentCell over the sequence, returning the final state: (*S, B, T, in) -> (*S, B, hidden)."""

    def __init__(self, cell: RecurrentCell):
        super().__init__()
        self.cell = cell

    def reset_parameters(self, generator: Generators = None) -> None:
        self.cell.reset_parameters(generator)

    def forward(self, xs: Tensor) -> Tensor:
        return self.cell.run(xs)[1]


def parse_model(name: str, recurrent: bool = False) -> tuple[str, tuple[str, ...]]:
    """Split a model name into its family ("units", "mlp", "rnn") and parts; a ConfigError lists what is allowed."""
    units = list_units()
    if recurrent and name in RECURRENT_BASELINES:
        return "rnn", (name,)
    if not recurrent and name in ACTIVATIONS:
        return "mlp", (name,)
    parts = tuple(name.split("-"))
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) == 2 and all(p in units for p in parts):
        return "units", parts
    baselines = RECURRENT_BASELINES if recurrent else tuple(ACTIVATIONS)
    raise ConfigError(f"unknown model {name!r}: use '<unit>-<unit>' with units from {', '.join(units)} "
                      f"(e.g. nau-nmu), or a baseline: {', '.join(baselines)}")


def build_model(name: str, input_size: int, output_size: int = 1, *, hidden_size: int = 2,
                num_seeds: int | None = None, recurrent: bool = False, device=None, dtype=None) -> Sequential:
    """Build model ``name`` (see the module docstring) mapping input_size -> output_size through ``hidden_size``."""
    family, parts = parse_model(name, recurrent)
    f = {"num_seeds": num_seeds, "device": device, "dtype": dtype}
    if family == "mlp":
        if recurrent:
            raise ConfigError("MLP baselines have no recurrent form; use lstm, gru, rnn-tanh or rnn-relu")
        return mlp([input_size, hidden_size, output_size], parts[0], **f)
    if family == "rnn":
        return Sequential(SeedRNN(parts[0], input_size, hidden_size, **f),
                          get_unit("linear", hidden_size, output_size, bias=True, **f))
    first, second = parts
    if recurrent:
        head: nn.Module = UnitRNN(RecurrentCell(first, input_size, hidden_size, **f))
    else:
        head = get_unit(first, input_size, hidden_size, **f)
    return Sequential(head, get_unit(second, hidden_size, output_size, **f))


def seed_copy(model: nn.Module, name: str, i: int, **build_options) -> Sequential:
    """A single-seed model holding seed ``i`` of ``model`` (built by ``build_model(name, **build_options)``)."""
    single = build_model(name, **{**build_options, "num_seeds": None})
    single.load_state_dict({k: v[i] for k, v in model.state_dict().items()})
    return single


def arithmetic_units(model: nn.Module) -> list[ArithmeticUnit]:
    """The arithmetic units inside a model (not the plain linear layers), in order."""
    return [m for m in model.modules() if isinstance(m, ArithmeticUnit) and m.unit_name != "linear"]
