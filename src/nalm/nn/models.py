"""Networks with a seed axis: two arithmetic units, MLP baselines, and their recurrent forms.

Model names (``build_model``):

- ``"<unit>-<unit>"``, e.g. ``nau-nmu``, ``nalu-nalu``, ``nac-nac_mul``: two registered units, in -> hidden -> out.
  A single unit name (``nau``) means the same unit twice; ``linear`` is the two-layer linear network.
- an activation name (``relu6``, ``relu``, ``tanh``, ``sigmoid``, ``softsign``, ``selu``, ``elu``, ...): the MLP
  baseline in -> hidden -> out with biases and that nonlinearity on the hidden layer.
- recurrent (``recurrent=True``): ``"<unit>-<unit>"`` is the first unit's RecurrentCell over the sequence
  followed by the second unit on the state after every step; ``lstm``, ``gru``, ``rnn-tanh``, ``rnn-relu`` are the
  classic cells followed by a linear output layer. A recurrent model (:class:`SequenceModel`) maps
  (*S, B, T, in) -> (*S, B, T, out): its output after every step (``steps=`` keeps only some of them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nalm.errors import ConfigError, ShapeError
from nalm.units import get_unit, list_units
from nalm.units.base import ArithmeticUnit, Generators
from nalm.units.recurrent import RecurrentCell

#: The nonlinearities of the MLP baselines (the 15 of Figure 1 plus the paper's Table 1 baselines).
ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
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
    make = ACTIVATIONS[name]
    if make is None:  # prelu
        return SeedPReLU(num_seeds, device=device, dtype=dtype)
    return make()


class Sequential(nn.Sequential):
    """nn.Sequential whose ``reset_parameters(generator)`` re-initialises every layer that has one."""

    def reset_parameters(self, generator: Generators = None) -> None:
        for layer in self:
            reset = getattr(layer, "reset_parameters", None)
            if reset is not None:
                reset(generator)


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
    ``forward`` returns the final hidden state, ``states`` the state after every step (or after chosen steps).
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
        with torch.no_grad():
            for p in self.parameters():
                if generator is None or isinstance(generator, torch.Generator):
                    p.uniform_(-bound, bound, generator=generator)
                else:
                    for p_i, g in zip(p, generator):
                        p_i.uniform_(-bound, bound, generator=g)

    def _cell(self, gi: Tensor, gh: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step from the input's and the state's gate pre-activations: (h, c) -> (h, c)."""
        if self.kind == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if self.kind == "gru":
            ir, iz, in_ = gi.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            return (1 - z) * torch.tanh(in_ + r * hn) + z * h, c
        pre = gi + gh
        return (torch.tanh(pre) if self.kind == "rnn-tanh" else torch.relu(pre)), c

    def forward(self, xs: Tensor) -> Tensor:
        return self.states(xs, [xs.shape[-2] - 1])[..., 0, :]

    def states(self, xs: Tensor, steps: Sequence[int] | None = None, block: int = 128) -> Tensor:
        """The hidden state after every step, (*S, B, T, hidden), or after the 0-based ``steps`` only,
        (*S, B, len(steps), hidden). The input projection is computed ``block`` steps at a time, so a long
        sequence never holds all T steps' gates at once."""
        h = xs.new_zeros(xs.shape[:-2] + (self.hidden_size,))
        c = torch.zeros_like(h)
        w_ih, w_hh = self.weight_ih.unsqueeze(-3).transpose(-1, -2), self.weight_hh.transpose(-1, -2)
        keep = _keep(steps, xs.shape[-2])
        out = []
        for t0 in range(0, xs.shape[-2], block):
            gi_block = xs[..., t0:t0 + block, :] @ w_ih + self.bias_ih.unsqueeze(-3)
            for k in range(gi_block.shape[-2]):
                h, c = self._cell(gi_block[..., k, :], h @ w_hh + self.bias_hh, h, c)
                if keep is None or t0 + k in keep:
                    out.append(h)
        return torch.stack(out, dim=-2)


def _keep(steps, length: int) -> set[int] | None:
    """The set of 0-based steps to keep (None: all), each checked to lie in the sequence."""
    if steps is None:
        return None
    keep = {int(t) for t in steps}
    if not keep or min(keep) < 0 or max(keep) >= length:
        raise ShapeError(f"steps {sorted(keep)} must be non-empty and lie in 0..{length - 1} (the sequence has "
                         f"{length} steps)")
    if len(keep) != len(steps):
        raise ShapeError(f"steps {list(steps)} must be distinct")
    if list(steps) != sorted(keep):
        raise ShapeError(f"steps {list(steps)} must be increasing")
    return keep


class SequenceModel(nn.Module):
    """A recurrent body and a head applied after every step: (*S, B, T, in) -> (*S, B, T, out).

    The body is a :class:`nalm.RecurrentCell` (an arithmetic unit's recurrent form, from its initial state) or a
    :class:`SeedRNN`; the head maps the hidden state to the output. ``forward(xs, steps)`` with 0-based,
    increasing ``steps`` returns only those steps, (*S, B, len(steps), out), and holds nothing else: a 1000-step
    evaluation needs the memory of one step. An input shared by every seed may come as (1, B, T, in): it is
    broadcast, never copied S times.
    """

    def __init__(self, body: RecurrentCell | SeedRNN, head: ArithmeticUnit):
        super().__init__()
        self.body, self.head = body, head

    def reset_parameters(self, generator: Generators = None) -> None:
        self.body.reset_parameters(generator)
        self.head.reset_parameters(generator)

    def states(self, xs: Tensor, steps: Sequence[int] | None = None) -> Tensor:
        if isinstance(self.body, SeedRNN):
            return self.body.states(xs, steps)
        cell: RecurrentCell = self.body
        if xs.dim() != len(cell._lead()) + 3 or xs.shape[-1] != cell.input_size:
            raise ShapeError(f"a recurrent model expects a sequence of shape "
                             f"{(*cell._lead(), 'B', 'T', cell.input_size)}, got {tuple(xs.shape)}")
        keep, h, out = _keep(steps, xs.shape[-2]), None, []
        xs = xs.expand(cell._lead() + xs.shape[-3:])  # a shared input (1, B, T, in): a view, copied step by step
        for t in range(xs.shape[-2]):
            h = cell(xs[..., t, :], h)
            if keep is None or t in keep:
                out.append(h)
        return torch.stack(out, dim=-2)

    def forward(self, xs: Tensor, steps: Sequence[int] | None = None) -> Tensor:
        return self.head(self.states(xs, steps))


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


def parse_options(text: str) -> dict[str, object]:
    """Unit options written ``key=value,key=value`` (e.g. ``gate=fixed,gate_value=0.99``): values are read as int,
    float, true/false or else kept as text; an item without ``=`` is a ConfigError."""
    if not isinstance(text, str):
        raise ConfigError(f"unit_options is text (key=value,...), got {text!r}")
    options: dict[str, object] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"unit options are key=value pairs separated by commas; got {item!r} in {text!r}")
        low = value.strip().lower()
        if low in ("true", "false"):
            options[key.strip()] = low == "true"
            continue
        for kind in (int, float):
            try:
                options[key.strip()] = kind(value)
                break
            except ValueError:
                pass
        else:
            options[key.strip()] = value.strip()
    return options


def build_model(name: str, input_size: int, output_size: int = 1, *, hidden_size: int = 2,
                num_seeds: int | None = None, recurrent: bool = False, device=None, dtype=None,
                unit_options: dict | None = None) -> nn.Module:
    """Build model ``name`` (see the module docstring) mapping input_size -> output_size through ``hidden_size``;
    ``unit_options`` go to both units of a UNIT-UNIT model (each must accept them)."""
    family, parts = parse_model(name, recurrent)
    f = {"num_seeds": num_seeds, "device": device, "dtype": dtype}
    if unit_options and family != "units":
        raise ConfigError(f"unit options {unit_options} need a model of two units, not {name!r}")
    u = {**f, **(unit_options or {})}
    if family == "mlp":
        if recurrent:
            raise ConfigError("MLP baselines have no recurrent form; use lstm, gru, rnn-tanh or rnn-relu")
        return mlp([input_size, hidden_size, output_size], parts[0], **f)
    if family == "rnn":
        return SequenceModel(SeedRNN(parts[0], input_size, hidden_size, **f),
                             get_unit("linear", hidden_size, output_size, bias=True, **f))
    first, second = parts
    if recurrent:
        return SequenceModel(RecurrentCell(first, input_size, hidden_size, **u),
                             get_unit(second, hidden_size, output_size, **u))
    return Sequential(get_unit(first, input_size, hidden_size, **u), get_unit(second, hidden_size, output_size, **u))


def seed_copy(model: nn.Module, name: str, i: int, **build_options) -> nn.Module:
    """A single-seed model holding seed ``i`` of ``model`` (built by ``build_model(name, **build_options)``)."""
    single = build_model(name, **{**build_options, "num_seeds": None})
    single.load_state_dict({k: v[i] for k, v in model.state_dict().items()})
    return single


def arithmetic_units(model: nn.Module) -> list[ArithmeticUnit]:
    """The arithmetic units inside a model (not the plain linear layers), in order."""
    return [m for m in model.modules() if isinstance(m, ArithmeticUnit) and m.unit_name != "linear"]
