"""Conv nets for MNIST digits, and the digit-sequence model of Table 2 (Trask et al., NeurIPS 2018, §4.2).

The sequence model reads a sequence of MNIST images and outputs, at every step, the running count of each digit
class (10 outputs) or the running sum of the digits (1 output)::

    l_t = digit_net(x_t)            # (S, B, T, 1, 28, 28) -> (S, B, T, k): each image on its own
    h_t = core(l_t, h_{t-1})        # a recurrent core over the per-image features
    y_t = h_t (unit cells) or readout(h_t) (LSTM / GRU / RNN)

Because the digit net sees one image at a time, the features of an image do not depend on its place in a sequence:
:meth:`DigitSequenceModel.features` and :meth:`DigitSequenceModel.run_features` split the model there, so a long
test sequence reuses the features of images it shares with others (``nalm.experiments.mnist.sequences``).

The digit net is written as an ordinary single-model ``nn.Module``; its S seeds come from a wrapper that maps
(S, N, ...) -> (S, N, ...): ``nalm.nn.ensemble.Ensemble`` (parameters stacked (S, ...), the default) or the plain loop
:class:`SeedLoop` here. Both initialise seed i from generator i the same way (one integer drawn from it seeds
torch's global generator under ``fork_rng`` while the factory runs), so they start from the same parameters.
The recurrent cores carry the seed axis natively (``nalm.nn.models.SeedRNN``, ``nalm.RecurrentCell``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nalm.errors import ConfigError, ShapeError
from nalm.nn.models import RECURRENT_BASELINES, SeedRNN
from nalm.units import get_unit, list_units
from nalm.units.base import Generators
from nalm.units.recurrent import RecurrentCell

IMAGE_SHAPE = (1, 28, 28)


class DigitConvNet(nn.Module):
    """conv c₁@5×5 → ReLU → max-pool 2 → conv c₂@5×5 → ReLU → max-pool 2 → FC (16·c₂ → hidden) → ReLU → FC (→ k).

    An ordinary single model: (*lead, 1, 28, 28) -> (*lead, out_features); PyTorch's default initialisation.
    """

    def __init__(self, out_features: int = 10, channels: tuple[int, int] = (20, 50), hidden: int = 500) -> None:
        super().__init__()
        for name, v in (("out_features", out_features), ("hidden", hidden), *zip(("channels[0]", "channels[1]"),
                                                                                   channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{type(self).__name__}: {name} must be a positive integer, got {v!r}")
        self.out_features = out_features
        self.conv1 = nn.Conv2d(1, channels[0], 5)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5)
        self.fc1 = nn.Linear(channels[1] * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-3:] != IMAGE_SHAPE:
            raise ShapeError(f"{type(self).__name__} expects images of shape (*, 1, 28, 28), got {tuple(x.shape)}")
        lead = x.shape[:-3]
        x = x.reshape(-1, *IMAGE_SHAPE)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # (N, c1, 12, 12)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, c2, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (N, hidden)
        return self.fc2(x).reshape(*lead, self.out_features)


class MnistNet2018(DigitConvNet):
    """The PyTorch MNIST example net of 2018 (pytorch/examples ``mnist/main.py`` at the time, which the NALU paper
    links): conv 20@5×5, ReLU, max-pool 2, conv 50@5×5, ReLU, max-pool 2, FC 800 → 500, ReLU, FC 500 → k; a
    regression head here (no log-softmax). 431k parameters with k = 10."""

    def __init__(self, out_features: int = 10) -> None:
        super().__init__(out_features, (20, 50), 500)


class SmallMnistNet(DigitConvNet):
    """A smaller variant of :class:`MnistNet2018` for quick runs: conv 8, conv 16, FC 256 → 64 → k."""

    def __init__(self, out_features: int = 10) -> None:
        super().__init__(out_features, (8, 16), 64)


#: Digit nets by name (``digit_net`` option of the sequence model).
DIGIT_NETS: dict[str, type[DigitConvNet]] = {"mnist2018": MnistNet2018, "small": SmallMnistNet}


#: Output heads of the digit net (``digit_head``).
DIGIT_HEADS = ("linear", "softmax")


class SoftmaxDigits(nn.Module):
    """The digit net's "softmax transform" (Madsen & Johansen, ICLR 2020, sequential MNIST): 10 logits per image →
    p = softmax(logits), then p itself (counting, 10 outputs) or the expected digit Σ_c c·p_c (the sum, 1 output).
    No parameters; the net's outputs stay on the simplex or in [0, 9]. (*, 10) -> (*, out_features)."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        if out_features not in (1, 10):
            raise ConfigError(f"SoftmaxDigits gives 10 probabilities or 1 expected digit, not {out_features!r} outputs")
        self.out_features = out_features
        self.register_buffer("digits", torch.arange(10.0).unsqueeze(-1), persistent=False)  # (10, 1)

    def forward(self, logits: Tensor) -> Tensor:
        if logits.shape[-1] != 10:
            raise ShapeError(f"SoftmaxDigits expects 10 logits in the last axis, got {tuple(logits.shape)}")
        p = torch.softmax(logits, dim=-1)
        return p if self.out_features == 10 else p @ self.digits.to(p.dtype)


def digit_net_factory(name: str, out_features: int) -> Callable[[], nn.Module]:
    """A factory of fresh single-model digit nets ``name`` (see :data:`DIGIT_NETS`) with ``out_features`` outputs."""
    if name not in DIGIT_NETS:
        raise ConfigError(f"unknown digit net {name!r}; choose from: {', '.join(DIGIT_NETS)}")
    return functools.partial(DIGIT_NETS[name], out_features)


class SeedLoop(nn.Module):
    """S independent copies of an ordinary module, run one after another: (S, N, ...) -> (S, N, ...).

    The simple stand-in for ``nalm.nn.ensemble.Ensemble``: parameters are held per copy (not stacked), so per-seed
    gradient clipping of the trainer does not apply. ``reset_parameters(generators)`` rebuilds copy i under
    ``torch.random.fork_rng`` seeded from generator i (the global RNG state is left as it was).
    """

    def __init__(self, factory: Callable[[], nn.Module], num_seeds: int, *, generators: Generators = None) -> None:
        super().__init__()
        if not isinstance(num_seeds, int) or isinstance(num_seeds, bool) or num_seeds < 1:
            raise ConfigError(f"SeedLoop: num_seeds must be a positive integer, got {num_seeds!r}")
        self.factory, self.num_seeds = factory, num_seeds
        self.copies = nn.ModuleList(factory() for _ in range(num_seeds))
        if generators is not None:
            self.reset_parameters(generators)

    def reset_parameters(self, generator: Generators = None) -> None:
        if generator is None:
            return
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * self.num_seeds
        if len(gens) != self.num_seeds:
            raise ConfigError(f"SeedLoop: got {len(gens)} generators for {self.num_seeds} seeds")
        for copy, g in zip(self.copies, gens):
            seed = int(torch.randint(0, 2**62, (), generator=g))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh = self.factory()
            copy.load_state_dict(fresh.state_dict())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] != self.num_seeds:
            raise ShapeError(f"SeedLoop expects a leading seed axis of {self.num_seeds}, got {tuple(x.shape)}")
        return torch.stack([copy(x_i) for copy, x_i in zip(self.copies, x)])


# -- recurrent cores over all steps: (S, B, T, k) -> (S, B, T, out) ----------------------------------------------------
class RNNCore(nn.Module):
    """LSTM, GRU or Elman RNN (tanh / ReLU) with a seed axis, all steps, and a linear read-out with bias.

    A :class:`nalm.nn.models.SeedRNN` (its gate equations follow ``torch.nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``) read out
    after every step: (S, B, T, in) -> (S, B, T, out).
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, output_size: int, *, num_seeds: int) -> None:
        super().__init__()
        if kind not in RECURRENT_BASELINES:
            raise ConfigError(f"unknown recurrent core {kind!r}; choose from: {', '.join(RECURRENT_BASELINES)}")
        self.kind = kind
        self.rnn = SeedRNN(kind, input_size, hidden_size, num_seeds=num_seeds)
        self.readout = get_unit("linear", hidden_size, output_size, num_seeds=num_seeds, bias=True)

    def reset_parameters(self, generator: Generators = None) -> None:
        self.rnn.reset_parameters(generator)
        self.readout.reset_parameters(generator)

    def states(self, xs: Tensor) -> Tensor:
        """The hidden state after every step: (S, B, T, in) -> (S, B, T, hidden)."""
        return self.rnn.states(xs)

    def forward(self, xs: Tensor) -> Tensor:
        return self.readout(self.states(xs))


#: Initialisations of a unit cell's weight (``recurrent_init``).
RECURRENT_INITS = ("unit", "identity", "accumulator")


class UnitCore(nn.Module):
    """A :class:`nalm.RecurrentCell` of any registered unit whose state is the output: h_t = unit([l_t, h_{t−1}]),
    input ``input_size`` (default k) and hidden k, so the state itself is the running count or sum.
    (S, B, T, input) -> (S, B, T, k).

    ``recurrent_init``: "unit" (the unit's own initialisation of its whole weight), "identity": the recurrent block
    B of the weight [A | B] starts at the identity (an exact accumulator of A x_t; A keeps the unit's
    initialisation, drawn first, so the random streams are the same), or "accumulator": A too starts at the identity
    (h_t = x_t + h_{t−1}; needs ``input_size`` equal to ``size``). Only for units whose weight is a parameter (NAU,
    linear, ...): a NAC's W = tanh(Ŵ) ⊙ σ(M̂) reaches 1 only asymptotically.
    """

    def __init__(self, unit: str, size: int, *, num_seeds: int, recurrent_init: str = "unit",
                 input_size: int | None = None, **unit_options) -> None:
        super().__init__()
        if recurrent_init not in RECURRENT_INITS:
            raise ConfigError(f"recurrent_init must be one of {', '.join(RECURRENT_INITS)}, got {recurrent_init!r}")
        self.cell = RecurrentCell(unit, input_size or size, size, num_seeds=num_seeds, **unit_options)
        if recurrent_init != "unit" and not isinstance(getattr(self.cell.unit, "weight", None), nn.Parameter):
            raise ConfigError(f"recurrent_init={recurrent_init!r} needs a unit whose weight is a parameter (e.g. nau); "
                              f"{unit!r} computes its weight from other parameters")
        if recurrent_init == "accumulator" and self.cell.input_size != size:
            raise ConfigError(f"recurrent_init='accumulator' needs as many inputs as outputs; got "
                              f"{self.cell.input_size} inputs for {size} outputs (use 'identity')")
        self.recurrent_init = recurrent_init

    def reset_parameters(self, generator: Generators = None) -> None:
        self.cell.reset_parameters(generator)
        if self.recurrent_init != "unit":
            eye = torch.eye(self.cell.hidden_size)
            with torch.no_grad():
                self.cell.unit.weight[..., self.cell.input_size:].copy_(eye)
                if self.recurrent_init == "accumulator":
                    self.cell.unit.weight[..., :self.cell.input_size].copy_(eye)

    def forward(self, xs: Tensor) -> Tensor:
        return self.cell.run(xs)[0]


def make_core(name: str, size: int, *, num_seeds: int, hidden_size: int = 32, recurrent_init: str = "unit",
              input_size: int | None = None, **unit_options) -> nn.Module:
    """The recurrent core ``name``: ``lstm``, ``gru``, ``rnn-tanh``, ``rnn-relu`` (``hidden_size`` units, linear
    read-out) or any registered unit (a cell whose state is the output; ``recurrent_init`` as :class:`UnitCore`),
    mapping (S, B, T, input_size) -> (S, B, T, size); ``input_size`` defaults to ``size``."""
    input_size = input_size or size
    if name in RECURRENT_BASELINES:
        if unit_options or recurrent_init != "unit":
            extra = sorted(unit_options) + (["recurrent_init"] if recurrent_init != "unit" else [])
            raise ConfigError(f"unit options {extra} do not apply to the {name} core")
        return RNNCore(name, input_size, hidden_size, size, num_seeds=num_seeds)
    if name in list_units():
        return UnitCore(name, size, num_seeds=num_seeds, recurrent_init=recurrent_init, input_size=input_size,
                        **unit_options)
    raise ConfigError(f"unknown recurrent core {name!r}; choose from: {', '.join(RECURRENT_BASELINES)} or a unit: "
                      f"{', '.join(list_units())}")


class DigitSequenceModel(nn.Module):
    """The model of Table 2: a digit net per image, then a recurrent core; (S, B, T, 1, 28, 28) -> (S, B, T, k).

    ``digit_net`` is any module mapping (S, N, 1, 28, 28) -> (S, N, k) with independent seeds (``SeedLoop`` or
    ``nalm.nn.ensemble.Ensemble``); ``core`` maps (S, B, T, k) -> (S, B, T, k). ``core_learning_rate`` (default: the
    trainer's rate) is the rate of the core's parameters through :meth:`parameter_groups`, which nalm's trainer uses.
    ``head`` (default none), a module without parameters such as :class:`SoftmaxDigits`, maps the digit net's
    outputs to the core's inputs.
    """

    def __init__(self, digit_net: nn.Module, core: nn.Module, *, core_learning_rate: float | None = None,
                 head: nn.Module | None = None) -> None:
        super().__init__()
        if core_learning_rate is not None and not core_learning_rate > 0:
            raise ConfigError(f"core_learning_rate must be positive or None, got {core_learning_rate!r}")
        self.digit_net, self.core, self.core_learning_rate = digit_net, core, core_learning_rate
        self.head = head if head is not None else nn.Identity()

    def reset_parameters(self, generator: Generators = None) -> None:
        """Re-initialise both parts; with a list of S generators, seed i draws from generator i alone (the digit
        net first, then the core)."""
        self.digit_net.reset_parameters(generator)
        self.core.reset_parameters(generator)

    def parameter_groups(self, learning_rate: float) -> list[dict]:
        """Optimiser groups: the digit net at ``learning_rate``, the core at ``core_learning_rate`` if set."""
        return [{"params": list(self.digit_net.parameters()), "lr": learning_rate},
                {"params": list(self.core.parameters()), "lr": self.core_learning_rate or learning_rate}]

    def recurrent_weights(self) -> list[dict[str, float]]:
        """Per seed, the recurrent block B of a unit cell's (additive) weight [A | B]: its mean diagonal
        ``recurrent_weight`` (1 for an exact accumulator) and its largest off-diagonal |B_ij|
        ``recurrent_offdiagonal`` (0 for one); empty for LSTM / GRU / RNN cores."""
        cell = getattr(self.core, "cell", None)
        if cell is None or not isinstance(getattr(cell.unit, "weight", None), Tensor):
            return []
        b = cell.unit.weight.detach().double().cpu()[..., cell.input_size:]  # (S, k, k)
        diag = torch.diagonal(b, dim1=-2, dim2=-1)
        off = (b - torch.diag_embed(diag)).abs().flatten(1).amax(dim=1)
        return [{"recurrent_weight": float(d.mean()), "recurrent_offdiagonal": float(o)} for d, o in zip(diag, off)]

    def features(self, images: Tensor) -> Tensor:
        """Per-image features: (S, N, 1, 28, 28) -> (S, N, k)."""
        return self.head(self.digit_net(images))

    def run_features(self, features: Tensor) -> Tensor:
        """The core over sequences of features: (S, B, T, k) -> (S, B, T, k)."""
        return self.core(features)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 6 or x.shape[-3:] != IMAGE_SHAPE:
            raise ShapeError(f"DigitSequenceModel expects images of shape (S, B, T, 1, 28, 28), got {tuple(x.shape)}")
        S, B, T = x.shape[:3]
        feats = self.features(x.reshape(S, B * T, *IMAGE_SHAPE))  # (S, B·T, k)
        return self.run_features(feats.reshape(S, B, T, -1))


def build_sequence_model(core: str, out_features: int, *, num_seeds: int, digit_net: str = "mnist2018",
                         hidden_size: int = 32, core_learning_rate: float | None = None, recurrent_init: str = "unit",
                         digit_outputs: int | None = None, digit_head: str = "linear",
                         ensemble: Callable[[Callable[[], nn.Module], int], nn.Module] | None = None,
                         **unit_options) -> DigitSequenceModel:
    """The sequence model for ``num_seeds`` seeds: digit net ``digit_net`` (see :data:`DIGIT_NETS`) with
    ``digit_outputs`` outputs per image (default ``out_features``), then the core ``core`` (see :func:`make_core`) with
    ``out_features`` outputs per step (10 to count, 1 to sum). ``digit_head="softmax"``: the net gives 10 logits and
    :class:`SoftmaxDigits` turns them into ``out_features`` values (not with ``digit_outputs``).

    ``ensemble(factory, num_seeds)`` builds the digit net's seed axis; the default is
    ``nalm.nn.ensemble.Ensemble(factory, num_seeds, mode="auto")`` (parameters stacked (S, ...); a loop over seeds for
    conv nets, which beat vmap's grouped convolutions on the CPU); :class:`SeedLoop` is the plain alternative.
    """
    if ensemble is None:
        from nalm.nn.ensemble import Ensemble

        def ensemble(factory, num_seeds):
            return Ensemble(factory, num_seeds, mode="auto")
    if digit_head not in DIGIT_HEADS:
        raise ConfigError(f"unknown digit head {digit_head!r}; choose from: {', '.join(DIGIT_HEADS)}")
    head = None
    if digit_head == "softmax":
        if digit_outputs not in (None, out_features):
            raise ConfigError("digit_head='softmax' sets the digit net's outputs itself (10 logits); leave "
                              "digit_outputs at its default")
        head, digit_outputs = SoftmaxDigits(out_features), None
    factory = digit_net_factory(digit_net, 10 if head is not None else digit_outputs or out_features)
    seeded = ensemble(factory, num_seeds)
    return DigitSequenceModel(seeded, make_core(core, out_features, num_seeds=num_seeds, hidden_size=hidden_size,
                                                recurrent_init=recurrent_init, input_size=digit_outputs,
                                                **unit_options),
                              core_learning_rate=core_learning_rate, head=head)


__all__ = ["DigitConvNet", "MnistNet2018", "SmallMnistNet", "DIGIT_NETS", "DIGIT_HEADS", "SoftmaxDigits",
           "digit_net_factory", "SeedLoop", "RNNCore", "UnitCore", "RECURRENT_INITS", "make_core", "DigitSequenceModel",
           "build_sequence_model"]
