"""Number words to numbers: Trask et al. (2018, §4.3, Table 3 and Figure 3).

The numbers 0–999 written in British English words, one token per word, no hyphens, "and" after "hundred" when
more follows; a model reads the tokens and regresses the value.

Worked example: 702 is "seven hundred and two", tokens ``[8, 29, 30, 3]`` (``VOCABULARY[8] == "seven"``); left
padded to five tokens it is ``[0, 8, 29, 30, 3]``, and the target is 702.0.

- **Data.** :data:`VOCABULARY` (31 ids: the pad id 0, then the 30 words), :func:`words`, :func:`encode`,
  :func:`pad` (left padding to :data:`MAX_TOKENS`).
- **Split** (:func:`split`), as the paper: 169 training numbers (0–19, every token at least once, the rest a random
  sample), 200 validation, 631 test; a pure function of the split seed, the same for every model and model seed.
  The paper's total is 1000 numbers; that it means 0–999 (not 1–1000) is our reading: "zero" is a word, "thousand"
  would occur in one number only.
- **Model** (:class:`NumberWordsModel`), with a seed axis: embedding (256) → LSTM (10) → an output unit on the
  state after the last real token, as the NALU authors' correspondence quoted by Madsen & Johansen (2020,
  appendix) describes. Tokens (S, B, T) int64 -> (S, B, 1). :meth:`NumberWordsModel.running_estimates` applies the
  output unit after every token (Figure 3).
- **Metric**: :func:`mean_absolute_error`, per seed; :func:`split_errors` on every split (Table 3).

Padding never changes a prediction: the LSTM updates its state (h, c) only on real tokens (h ← h_new where the
token is real, else h is kept), so pad ids may stand anywhere — left padding, as :func:`pad` writes, keeps every
final state at the last position. A number's prediction thus depends on its own tokens alone, not on its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from nalm.engine.task import evaluation_generator
from nalm.errors import ConfigError, ShapeError
from nalm.units import get_unit, list_units
from nalm.units.base import Generators

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

#: The pad token, id 0.
PAD = 0
#: Every token: the pad token, then every word that occurs in 0–999 (31 in all).
VOCABULARY: tuple[str, ...] = ("<pad>",) + _UNITS + _TENS + ("hundred", "and")
TOKEN_ID: dict[str, int] = {w: i for i, w in enumerate(VOCABULARY)}
#: The longest number in tokens ("three hundred and twenty one").
MAX_TOKENS = 5
#: The numbers of the task.
NUMBERS = range(1000)
#: Split name -> size (Trask et al. 2018, §4.3).
SPLIT_SIZES: dict[str, int] = {"train": 169, "validation": 200, "test": 631}


# -- data ---------------------------------------------------------------------------------------------------------
def _check_number(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= 999:
        raise ConfigError(f"number words cover the integers 0–999, got {n!r}")
    return int(n)


def words(n: int) -> list[str]:
    """The British English words of ``n`` (0–999): ``words(115) == ["one", "hundred", "and", "fifteen"]``."""
    n = _check_number(n)
    if n < 20:
        return [_UNITS[n]]
    if n < 100:
        return [_TENS[n // 10 - 2]] + ([_UNITS[n % 10]] if n % 10 else [])
    rest = n % 100
    return [_UNITS[n // 100], "hundred"] + (["and"] + words(rest) if rest else [])


def encode(n: int) -> list[int]:
    """The token ids of ``n``'s words, unpadded (1–5 ids, never the pad id)."""
    return [TOKEN_ID[w] for w in words(n)]


def decode(ids: Sequence[int]) -> str:
    """The words of token ids, pad ids dropped: ``decode(encode(702)) == "seven hundred and two"``."""
    return " ".join(VOCABULARY[int(i)] for i in ids if int(i) != PAD)


def pad(numbers: Sequence[int] | np.ndarray, length: int = MAX_TOKENS) -> np.ndarray:
    """Token ids of ``numbers``, left padded with :data:`PAD` to ``length``: (N,) -> (N, length) int64."""
    if length < MAX_TOKENS:
        raise ConfigError(f"pad length must be at least {MAX_TOKENS} (the longest number), got {length}")
    out = np.full((len(numbers), length), PAD, dtype=np.int64)
    for row, n in zip(out, numbers):
        ids = encode(n)
        row[length - len(ids):] = ids
    return out


#: The three splits, in the order tables show them.
SPLITS = ("train", "validation", "test")


def split(seed: int = 0) -> dict[str, np.ndarray]:
    """The paper's split of 0–999: {"train": 169, "validation": 200, "test": 631 numbers}, each sorted (int64).

    Training holds 0–19; then, walking a random permutation of 20–999 (from the split seed's own stream, apart
    from every model seed), first each number that brings a word not yet in training (so every token appears in
    training; at most 10 numbers), then the next numbers until training holds 169; the next 200 are validation,
    the remaining 631 test. Stable-nalu's walk is the same idea (it fills test first).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"split seed must be a non-negative integer, got {seed!r}")
    rest = evaluation_generator(int(seed), 0).permutation(np.arange(20, 1000))
    train = list(range(20))
    seen = {w for n in train for w in words(n)}
    taken = np.zeros(len(rest), dtype=bool)
    for i, n in enumerate(rest):
        new = set(words(int(n))) - seen
        if new:
            train.append(int(n))
            seen |= new
            taken[i] = True
    rest = rest[~taken]
    fill = SPLIT_SIZES["train"] - len(train)
    train += rest[:fill].tolist()
    validation = rest[fill:fill + SPLIT_SIZES["validation"]]
    test = rest[fill + SPLIT_SIZES["validation"]:]
    return {"train": np.sort(np.asarray(train, dtype=np.int64)), "validation": np.sort(validation),
            "test": np.sort(test)}


def _check_split_name(name: str) -> str:
    if name not in SPLIT_SIZES:
        raise ConfigError(f"unknown split {name!r}; choose from: {', '.join(SPLIT_SIZES)}")
    return name


def tensors(numbers: Sequence[int] | np.ndarray, dtype: torch.dtype = torch.float32,
            device=None) -> tuple[Tensor, Tensor]:
    """Model inputs for ``numbers``: tokens (1, N, MAX_TOKENS) int64, left padded, and targets (1, N, 1).

    The leading 1 is the seed axis, shared by every seed (``expand`` it, or let the model broadcast it).
    """
    tokens = torch.as_tensor(pad(numbers), device=device).unsqueeze(0)
    targets = torch.as_tensor(np.asarray(numbers, dtype=np.float64), dtype=dtype, device=device).view(1, -1, 1)
    return tokens, targets


def evaluation_sets(split_seed: int = 0, dtype: torch.dtype = torch.float32,
                    device=None) -> dict[str, tuple[Tensor, Tensor]]:
    """Every split as model inputs: name -> (tokens (1, N, 5) int64, targets (1, N, 1))."""
    return {name: tensors(numbers, dtype, device) for name, numbers in split(split_seed).items()}


def training_batch(tokens: Tensor, targets: Tensor, indices: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    """Each seed's own rows of a fixed set: tokens (1, N, T), targets (1, N, 1), indices (S, B) -> (S, B, T), (S, B, 1).

    ``indices`` is e.g. :func:`nalm.engine.task.seed_order` over the 169 training numbers.
    """
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64, device=tokens.device)
    if idx.dim() != 2:
        raise ShapeError(f"indices must be (S, B), got shape {tuple(idx.shape)}")
    return tokens[0][idx], targets[0][idx]


def examples(split_name: str = "test", count: int = 10, seed: int | None = None,
             split_seed: int = 0) -> list[dict]:
    """Examples of a split for ``nalm sample``: dicts {"number", "words", "tokens"} (tokens unpadded).

    ``seed=None`` lists the split's first ``count`` numbers in order; a seed draws ``count`` of them at random.
    """
    numbers = split(split_seed)[_check_split_name(split_name)]
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"count must be a positive integer, got {count!r}")
    if seed is not None:
        numbers = np.sort(evaluation_generator(int(seed), 1).choice(numbers, min(count, len(numbers)), replace=False))
    return [{"number": int(n), "words": " ".join(words(int(n))), "tokens": encode(int(n))} for n in numbers[:count]]


# -- model --------------------------------------------------------------------------------------------------------
def _per_seed(param: Tensor, generator: Generators, fill) -> None:
    """Fill ``param`` (S, ...) in place: seed i from ``generator[i]`` alone, or all from one generator/None."""
    with torch.no_grad():
        if generator is None or isinstance(generator, torch.Generator):
            fill(param, generator)
            return
        gens = list(generator)
        if len(gens) != param.shape[0]:
            raise ConfigError(f"got {len(gens)} generators for {param.shape[0]} seeds")
        for p, g in zip(param, gens):
            fill(p, g)


class SeedEmbedding(nn.Module):
    """A token embedding with a seed axis: weight (S, V, D), tokens (S, B, T) -> (S, B, T, D).

    Initialised N(0, 1) as ``torch.nn.Embedding``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, num_seeds: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_seeds, num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        _per_seed(self.weight, generator, lambda t, g: t.normal_(0.0, 1.0, generator=g))

    def forward(self, tokens: Tensor) -> Tensor:
        return gather_rows(self.weight, tokens)


def gather_rows(table: Tensor, tokens: Tensor) -> Tensor:
    """Row ``tokens[s, b, t]`` of seed s's table: table (S, V, F), tokens (S, B, T) -> (S, B, T, F)."""
    S, B, T = tokens.shape
    V = table.shape[1]
    # One lookup in the S tables laid end to end: an embedding's backward accumulates rows without the scatter of
    # torch.gather's (about a tenth of a training step at S = 10).
    rows = tokens + torch.arange(S, device=tokens.device).view(S, 1, 1) * V
    return nn.functional.embedding(rows, table.reshape(S * V, table.shape[-1]))


class MaskedSeedLSTM(nn.Module):
    """An LSTM with a seed axis that updates its state only where ``mask`` is true (Hochreiter & Schmidhuber 1997).

    The gate equations of ``torch.nn.LSTM`` (gates i, f, g, o in that order), initialised like it:
    U[−1/√H, 1/√H] for every weight and bias. On a masked-out step h and c are carried over unchanged.
    """

    def __init__(self, input_size: int, hidden_size: int, *, num_seeds: int, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        f = {"device": device, "dtype": dtype}
        G = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(num_seeds, G, input_size, **f))
        self.weight_hh = nn.Parameter(torch.empty(num_seeds, G, hidden_size, **f))
        self.bias_ih = nn.Parameter(torch.empty(num_seeds, 1, G, **f))
        self.bias_hh = nn.Parameter(torch.empty(num_seeds, 1, G, **f))
        self.reset_parameters()

    def reset_parameters(self, generator: Generators = None) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            _per_seed(p, generator, lambda t, g: t.uniform_(-bound, bound, generator=g))

    def input_gates(self, x: Tensor) -> Tensor:
        """The input's share of the gate pre-activations, both biases included: (S, *, in) -> (S, *, 4H)."""
        S = x.shape[0]
        flat = x.reshape(S, -1, self.input_size)
        out = torch.baddbmm(self.bias_ih + self.bias_hh, flat, self.weight_ih.transpose(1, 2))
        return out.view(x.shape[:-1] + (4 * self.hidden_size,))

    def recur(self, gates_in: Tensor, mask: Tensor) -> Tensor:
        """Run over precomputed input gates (S, B, T, 4H) with mask (S, B, T) bool -> states h (S, B, T, H).

        The initial state is zero; where ``mask`` is false the step keeps the previous h and c.
        """
        S, B, T, _ = gates_in.shape
        H = self.hidden_size
        h = gates_in.new_zeros(S, B, H)
        c = torch.zeros_like(h)
        w_hh = self.weight_hh.transpose(1, 2)  # (S, H, 4H)
        hs = []
        # unbind, not gates_in[:, :, t]: the backward of a slice fills a zero tensor of the whole input per step
        # (a quarter of a training step at S = 10); one sigmoid over all four gates is one kernel, not three.
        for g_t, m in zip(gates_in.unbind(2), mask.unsqueeze(-1).unbind(2)):
            gates = torch.baddbmm(g_t, h, w_hh)  # (S, B, 4H)
            s = torch.sigmoid(gates)
            i, f, o = s[..., :H], s[..., H:2 * H], s[..., 3 * H:]
            c_new = f * c + i * torch.tanh(gates[..., 2 * H:3 * H])
            h_new = o * torch.tanh(c_new)
            c, h = torch.where(m, c_new, c), torch.where(m, h_new, h)
            hs.append(h)
        return torch.stack(hs, dim=2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (S, B, T, in), mask (S, B, T) -> h after every step (S, B, T, H)."""
        return self.recur(self.input_gates(x), mask)


@dataclass(frozen=True)
class NumberWordsConfig:
    """The number-words experiment's options. Sizes: the NALU authors' correspondence (embedding ~256, LSTM ~10)."""

    split_seed: int = 0
    embedding_size: int = 256
    hidden_size: int = 10
    #: Options of the output unit (e.g. {"eps": 1e-7} for nalu); "linear" always has a bias.
    output_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int) or self.split_seed < 0:
            raise ConfigError(f"split_seed must be a non-negative integer, got {self.split_seed!r}")
        for name in ("embedding_size", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.output_options, dict):
            raise ConfigError(f"output_options must be a dict, got {self.output_options!r}")


class NumberWordsModel(nn.Module):
    """Embedding → masked LSTM → output unit on the last state: tokens (S, B, T) int64 -> (S, B, 1).

    The model of Trask et al. (2018, §4.3) as the authors described it to Madsen & Johansen: embedding about 256,
    LSTM about 10, the output layer (Linear, NAC or NALU) applied to the final element only. ``output`` is any
    registered unit (:func:`nalm.list_units`); ``"linear"`` is affine (with a bias), the paper's "LSTM" row.
    ``output_scale`` multiplies the unit's output (the unit then learns value / output_scale: a controlled run's
    change of the targets' scale; 1 in the paper).
    Tokens may be (S, B, T) or (1, B, T) (shared by every seed); pad ids (0) leave the state unchanged.
    """

    def __init__(self, output: str = "nalu", *, num_seeds: int, embedding_size: int = 256, hidden_size: int = 10,
                 vocabulary_size: int = len(VOCABULARY), output_scale: float = 1.0, device=None, dtype=None,
                 **output_options):
        super().__init__()
        if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
            raise ConfigError(f"num_seeds must be a positive integer, got {num_seeds!r}")
        if output not in list_units():
            raise ConfigError(f"unknown output unit {output!r}; choose from: {', '.join(list_units())}")
        for name, value in (("embedding_size", embedding_size), ("hidden_size", hidden_size),
                            ("vocabulary_size", vocabulary_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(output_scale, bool) or not isinstance(output_scale, (int, float)) or not 0 < output_scale < 1e9:
            raise ConfigError(f"output_scale must be a positive number, got {output_scale!r}")
        self.output_scale = float(output_scale)
        if output == "linear":
            output_options = {"bias": True, **output_options}
        f = {"num_seeds": num_seeds, "device": device, "dtype": dtype}
        self.output_name, self.num_seeds, self.vocabulary_size = output, num_seeds, vocabulary_size
        self.embedding = SeedEmbedding(vocabulary_size, embedding_size, **f)
        self.lstm = MaskedSeedLSTM(embedding_size, hidden_size, **f)
        self.output = get_unit(output, hidden_size, 1, **f, **output_options)

    @classmethod
    def from_config(cls, config: NumberWordsConfig, output: str, num_seeds: int, device=None,
                    dtype=None) -> "NumberWordsModel":
        return cls(output, num_seeds=num_seeds, embedding_size=config.embedding_size,
                   hidden_size=config.hidden_size, device=device, dtype=dtype, **config.output_options)

    def reset_parameters(self, generator: Generators = None) -> None:
        """Re-initialise; with a list of S generators seed i draws from generator i only (embedding, LSTM, output)."""
        self.embedding.reset_parameters(generator)
        self.lstm.reset_parameters(generator)
        self.output.reset_parameters(generator)

    def _check(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 3 \
                or tokens.shape[0] not in (1, self.num_seeds):
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            dtype = tokens.dtype if isinstance(tokens, Tensor) else None
            raise ShapeError(f"NumberWordsModel(num_seeds={self.num_seeds}) expects int64 tokens of shape "
                             f"({self.num_seeds} or 1, B, T), got {shape} {dtype}")
        if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.vocabulary_size:
            raise ShapeError(f"token ids must lie in [0, {self.vocabulary_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.expand((self.num_seeds,) + tokens.shape[1:])

    def states(self, tokens: Tensor) -> Tensor:
        """The LSTM state after every token: (S, B, T) -> (S, B, T, H); a pad step repeats the previous state."""
        return self._states(self._check(tokens))

    def _states(self, tokens: Tensor) -> Tensor:
        # The input projection is linear, so project the S vocabularies once and gather: (S, V, 4H) -> (S, B, T, 4H).
        table = self.lstm.input_gates(self.embedding.weight)
        return self.lstm.recur(gather_rows(table, tokens), tokens != PAD)

    def forward(self, tokens: Tensor) -> Tensor:
        """The value of each number: (S, B, T) -> (S, B, 1), the output unit on the state after the last token."""
        return self._out(self.states(tokens)[:, :, -1])

    def _out(self, h: Tensor) -> Tensor:
        y = self.output(h)
        return y * self.output_scale if self.output_scale != 1.0 else y

    def running_estimates(self, tokens: Tensor) -> Tensor:
        """The output unit after every token (Figure 3): (S, B, T) -> (S, B, T), NaN at pad positions.

        The estimate at the last position is the prediction of :meth:`forward`.
        """
        tokens = self._check(tokens)
        estimates = self._out(self._states(tokens))[..., 0]  # (S, B, T, H) -> (S, B, T)
        real = tokens != PAD
        return torch.where(real, estimates, torch.full_like(estimates, float("nan")))


# -- metrics ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def mean_absolute_error(model: nn.Module, tokens: Tensor, targets: Tensor) -> Tensor:
    """Per-seed MAE (S,) float64 of ``model`` on tokens (1 or S, N, T) with targets (1 or S, N, 1)."""
    pred = model(tokens)  # (S, N, 1)
    if targets.dim() != 3 or targets.shape[1:] != pred.shape[1:]:
        raise ShapeError(f"targets must be (1 or S, {pred.shape[1]}, 1), got {tuple(targets.shape)}")
    return (pred.double() - targets.double()).abs().mean(dim=(1, 2)).cpu()


def split_errors(model: nn.Module, sets: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """``<split>_mae`` (S,) float64 for every set of :func:`evaluation_sets` (Table 3's metric)."""
    return {f"{name}_mae": mean_absolute_error(model, tokens, targets) for name, (tokens, targets) in sets.items()}


@torch.no_grad()
def figure3_estimates(model: NumberWordsModel, numbers: Sequence[int]) -> list[dict]:
    """Running estimates of ``numbers`` for Figure 3: per number {"number", "words", "estimates": (S, n) list}."""
    tokens, _ = tensors(numbers, dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
    est = model.running_estimates(tokens).cpu().double().numpy()  # (S, N, T)
    out = []
    for j, n in enumerate(numbers):
        w = words(n)
        out.append({"number": int(n), "words": w, "estimates": est[:, j, -len(w):].tolist()})
    return out


def constant_errors(split_seed: int) -> dict[str, float]:
    """MAE on each split of the best constant for the training set (its median): the floor of "learned nothing"."""
    s = split(split_seed)
    c = float(np.median(s["train"]))
    return {name: float(np.abs(v - c).mean()) for name, v in s.items()}
