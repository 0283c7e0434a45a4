"""MNIST digit counting and addition (Trask et al., NeurIPS 2018, §4.2, Table 2).

A recurrent model reads a sequence of MNIST images; its target at every step is the running count of each digit
class (``count``: a 10-way regression, k = 10) or the running sum of the digits (``sum``, k = 1). The digit net gets
no direct supervision. Training sequences have ``train_length`` (10) images from MNIST-train less a held-out
validation part; test sequences of lengths 1, 10, 100 and 1000 come from MNIST-test only.

Worked example (length 3, digits 3, 0, 7): ``sum`` targets 3, 3, 10; ``count`` targets e₃, e₀ + e₃, e₀ + e₃ + e₇
(eᵢ the i-th unit vector of length 10). The loss is the MSE on every step's running target (``loss_steps="all"``,
stable-nalu's choice: with the final step only, a prototype's digit net collapsed to a constant) or the last only.

Training batches: seed i draws its images (uniformly, with replacement) from its own generator, so a run of S seeds
draws what S runs of one seed would. Evaluation sets are fixed and shared by all seeds: the images of the N sequences
of length L are successive random permutations of the pool (each image used equally often), from an evaluation
generator of their own (index L; the validation set index 0). Evaluation computes each pool image's features once
and runs the core on gathered features (exact: the digit net sees one image at a time), so length 1000 costs no
more conv work than length 1.

Metrics per set (per seed, float64): ``<set>_mae`` (final output; for count the mean over the 10 classes),
``<set>_exact`` (share of sequences whose rounded final output is all right) and, at length 1,
``test1_digit_accuracy`` (argmax of the counts, or the rounded sum clipped to 0..9, against the digit's label).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nalm.engine.task import Task, evaluation_generator
from nalm.errors import ConfigError, ShapeError

from .data import Mnist, load_mnist, split_train

#: Target name -> outputs per step.
TARGETS = {"count": 10, "sum": 1}
#: MNIST's pixel mean and standard deviation (of byte / 255), as the PyTorch example normalises.
MEAN, STD = 0.1307, 0.3081
LOSS_STEPS = ("all", "last")


def parse_lengths(text: str | Sequence[int]) -> tuple[int, ...]:
    """"1,10,100,1000" (or a sequence of ints) -> (1, 10, 100, 1000), sorted and unique."""
    try:
        parts = text.split(",") if isinstance(text, str) else list(text)
        lengths = tuple(sorted({int(p) for p in parts}))
    except (TypeError, ValueError):
        lengths = ()
    if not lengths or lengths[0] < 1:
        raise ConfigError(f"test_lengths must be positive integers like '1,10,100,1000', got {text!r}")
    return lengths


@dataclass(frozen=True)
class MnistSequenceConfig:
    """The data of MNIST counting / addition; every field is a CLI option."""

    #: "count" (10 running counts) or "sum" (the running sum).
    target: str = "sum"
    train_length: int = 10
    test_lengths: str = "1,10,100,1000"
    #: Sequences per test length (shared by all seeds).
    test_sequences: int = 1000
    #: Images of MNIST-train held out for validation, and the number of validation sequences (of train_length).
    validation: int = 5000
    validation_sequences: int = 1000
    #: Seed of the held-out choice (None: the last ``validation`` images, as stable-nalu).
    split_seed: int | None = 0
    #: The loss on every step's running target ("all") or on the final step only ("last").
    loss_steps: str = "all"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; choose from: {', '.join(TARGETS)}")
        if self.loss_steps not in LOSS_STEPS:
            raise ConfigError(f"loss_steps must be one of {', '.join(LOSS_STEPS)}, got {self.loss_steps!r}")
        for name in ("train_length", "test_sequences", "validation", "validation_sequences"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.split_seed is not None and (not isinstance(self.split_seed, int) or self.split_seed < 0):
            raise ConfigError(f"split_seed must be a non-negative integer or None, got {self.split_seed!r}")
        parse_lengths(self.test_lengths)

    @property
    def lengths(self) -> tuple[int, ...]:
        return parse_lengths(self.test_lengths)

    @property
    def outputs(self) -> int:
        return TARGETS[self.target]


# -- data --------------------------------------------------------------------------------------------------------------
def normalize(images: Tensor | np.ndarray, out: Tensor | None = None) -> Tensor:
    """uint8 images (..., 28, 28) -> float32 (..., 1, 28, 28), (x / 255 − 0.1307) / 0.3081; into ``out`` if given."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.shape[-2:] != (28, 28):
        raise ShapeError(f"normalize expects uint8 images (..., 28, 28), got {images.dtype} {tuple(images.shape)}")
    x = images.unsqueeze(-3)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32)
    torch.mul(x, 1.0 / (255 * STD), out=out)
    return out.sub_(MEAN / STD)


def running_targets(labels: Tensor | np.ndarray, target: str) -> Tensor:
    """Digit labels (..., T) -> the running targets float32 (..., T, k): counts (k = 10) or sums (k = 1)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if target == "count":
        return torch.nn.functional.one_hot(labels, 10).cumsum(dim=-2).float()
    if target == "sum":
        return labels.cumsum(dim=-1).unsqueeze(-1).float()
    raise ConfigError(f"unknown target {target!r}; choose from: {', '.join(TARGETS)}")


def sequence_positions(pool_size: int, length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, length) positions into a pool of ``pool_size`` images: successive random permutations of the pool,
    cut into sequences, so every image is used equally often (±1)."""
    need = count * length
    perms = [rng.permutation(pool_size) for _ in range(math.ceil(need / pool_size))]
    return np.concatenate(perms)[:need].reshape(count, length).astype(np.int64)


# -- metrics: pure functions of final outputs (S, N, k) ----------------------------------------------------------------
def _check(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.dim() != 3 or target.dim() != 3 or target.shape[1:] != pred.shape[1:] or target.shape[0] not in (
            1, pred.shape[0]):
        raise ShapeError(f"{name} expects predictions (S, N, k) and targets (S or 1, N, k), got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


def mean_absolute_error(pred: Tensor, target: Tensor) -> Tensor:
    """Per-seed MAE over sequences and the k outputs: (S, N, k), (S or 1, N, k) -> (S,) float64."""
    _check(pred, target, "mean_absolute_error")
    return (pred.double() - target.double()).abs().mean(dim=(1, 2))


def exact_share(pred: Tensor, target: Tensor) -> Tensor:
    """Per-seed share of sequences whose rounded output equals the target in all k outputs: -> (S,) float64."""
    _check(pred, target, "exact_share")
    return (torch.round(pred.double()) == target.double()).all(dim=-1).double().mean(dim=1)


def digit_accuracy(pred: Tensor, labels: Tensor) -> Tensor:
    """Per-digit accuracy of length-1 outputs (S, N, k) against labels (N,) or (S, N): argmax of the 10 counts, or
    the rounded sum clipped to 0..9. -> (S,) float64."""
    labels = torch.as_tensor(labels)
    if pred.dim() != 3 or pred.shape[-1] not in (1, 10) or labels.shape[-1] != pred.shape[1]:
        raise ShapeError(f"digit_accuracy expects outputs (S, N, 10 or 1) and labels (N,), got "
                         f"{tuple(pred.shape)} and {tuple(labels.shape)}")
    if pred.shape[-1] == 10:
        guess = pred.argmax(dim=-1)
    else:
        guess = torch.round(pred[..., 0]).clamp(0, 9).long()
    return (guess == labels.to(guess.device).long()).double().mean(dim=1)


# -- feature reuse -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def final_outputs(model, images: Tensor, sequences: dict[str, np.ndarray], num_seeds: int, *, device=None,
                  image_chunk: int = 2000, max_elements: int = 1 << 25) -> dict[str, Tensor]:
    """The final output of ``model`` on each set of sequences, with each image's features computed once.

    ``model`` offers ``features`` ((S, N, 1, 28, 28) -> (S, N, k)) and ``run_features`` ((S, B, T, k) ->
    (S, B, T, k)), as :class:`nalm.experiments.mnist.nets.DigitSequenceModel`; ``images`` uint8 (P, 28, 28) is the pool and
    ``sequences`` maps names to positions (N, T) into it. Returns name -> (S, N, k) on the CPU.
    """
    S = num_seeds
    dtype = next(model.parameters()).dtype
    used = np.unique(np.concatenate([s.ravel() for s in sequences.values()]))
    feats = []
    for i in range(0, len(used), image_chunk):
        x = normalize(images[torch.from_numpy(used[i:i + image_chunk])]).to(device, dtype)  # (n, 1, 28, 28)
        feats.append(model.features(x.expand(S, *x.shape)))  # (S, n, k)
    features = torch.cat(feats, dim=1)  # (S, U, k)
    where = np.full(len(images), -1, dtype=np.int64)
    where[used] = np.arange(len(used))
    out = {}
    for name, positions in sequences.items():
        N, T = positions.shape
        rows = max(1, max_elements // (S * T * 32))  # the core's states, ~32 values per step and seed
        idx = torch.from_numpy(where[positions]).to(features.device)  # (N, T) into the features
        out[name] = torch.cat([model.run_features(features[:, idx[j:j + rows]])[:, :, -1].cpu()
                               for j in range(0, N, rows)], dim=1)  # (S, N, k)
    return out


# -- the task ----------------------------------------------------------------------------------------------------------
class MnistSequenceTask(Task):
    """MNIST counting or addition for S seeds: batches x (S, B, T, 1, 28, 28), y (S, B, T, k); fixed evaluation
    sets ``validation`` (train_length, from the held-out MNIST-train images) and ``test<L>`` (from MNIST-test)."""

    selection_metric = "validation_mae"
    finite_metrics = ("validation_mae",)
    success_metric = None
    threshold = None

    def __init__(self, config: MnistSequenceConfig, seeds: Sequence[int], mnist: Mnist | None = None, *,
                 evaluation_seed: int = 0) -> None:
        self.config = config
        self.seeds = list(seeds)
        self.name = f"mnist-{config.target}"
        self.input_size = 28 * 28
        self.output_size = config.outputs
        mnist = mnist if mnist is not None else load_mnist()
        if config.validation >= len(mnist.train_labels):
            raise ConfigError(f"validation={config.validation} must be below the {len(mnist.train_labels)} "
                              f"MNIST training images")
        train, valid = split_train(mnist, config.validation, config.split_seed)
        self.train_images = torch.from_numpy(mnist.train_images[train])  # (P, 28, 28) uint8
        self.train_labels = torch.from_numpy(mnist.train_labels[train])
        self.pools = {"validation": (torch.from_numpy(mnist.train_images[valid]),
                                     torch.from_numpy(mnist.train_labels[valid])),
                      "test": (torch.tensor(mnist.test_images), torch.tensor(mnist.test_labels))}
        self.sets = self.evaluation_positions(evaluation_seed)

    def evaluation_positions(self, evaluation_seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
        """Set name -> (pool name, positions (N, T) into that pool), fixed by ``evaluation_seed``."""
        cfg = self.config
        sets = {"validation": ("validation", sequence_positions(len(self.pools["validation"][1]), cfg.train_length,
                                                                cfg.validation_sequences,
                                                                evaluation_generator(evaluation_seed, 0)))}
        for L in cfg.lengths:
            sets[f"test{L}"] = ("test", sequence_positions(len(self.pools["test"][1]), L, cfg.test_sequences,
                                                           evaluation_generator(evaluation_seed, L)))
        return sets

    def train_positions(self, bitgens, batch_size: int) -> Tensor:
        """The next training batch's image positions (S, B, T) into ``train_images``: seed i's drawn uniformly with
        replacement from ``bitgens[i]`` alone."""
        T = self.config.train_length
        return torch.from_numpy(np.stack([
            np.random.Generator(g).integers(0, len(self.train_labels), (batch_size, T)) for g in bitgens]))

    def sample(self, bitgens, batch_size, buffer=None):
        """A fresh batch per seed, seed i's images drawn with its own generator: x (S, B, T, 1, 28, 28) float32
        (a view of ``buffer``), y (S, B, T, k)."""
        S, T = len(bitgens), self.config.train_length
        shape = (S, batch_size, T, 1, 28, 28)
        if buffer is None or tuple(buffer.shape) != shape:
            buffer = torch.empty(shape, dtype=torch.float32)
        positions = self.train_positions(bitgens, batch_size)
        normalize(self.train_images[positions], out=buffer)  # (S, B, T, 28, 28) -> (S, B, T, 1, 28, 28)
        return buffer, running_targets(self.train_labels[positions], self.config.target), buffer

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        """Per-seed MSE over every step (``loss_steps="all"``) or the final step: (S,)."""
        if self.config.loss_steps == "last":
            output, y = output[:, :, -1], y[:, :, -1]
        return (output - y).pow(2).flatten(1).mean(dim=1)

    def targets(self, name: str) -> tuple[Tensor, Tensor]:
        """Set ``name``'s final targets (1, N, k) and its sequences' labels (N, T)."""
        pool, positions = self.sets[name]
        labels = self.pools[pool][1][torch.from_numpy(positions)]
        return running_targets(labels, self.config.target)[:, -1].unsqueeze(0), labels

    def examples(self, split: str, count: int, bitgens=None) -> tuple[Tensor, Tensor, np.ndarray]:
        """Images uint8 (P, 28, 28) and labels (P,) of ``split``'s pool and the positions (count, T) of its first
        ``count`` sequences: ``train`` (the next batch of ``bitgens[0]``), ``validation`` or ``test`` (the sequences of
        the longest test length)."""
        if split == "train":
            return self.train_images, self.train_labels, self.train_positions(bitgens[:1], count)[0].numpy()
        if split not in ("validation", "test"):
            raise ConfigError(f"unknown split {split!r}; choose from: train, validation, test")
        name = "validation" if split == "validation" else f"test{max(self.config.lengths)}"
        return (*self.pools[split], self.sets[name][1][:count])

    def reference(self) -> dict[str, dict[str, float]]:
        """Per evaluation set: ``mean_target`` (the mean |final target|) and ``baseline_mae``, the MAE of the
        length-aware mean predictor L × (the mean target per image of the training pool), which looks at no image."""
        labels = self.train_labels.long()
        per_image = (torch.nn.functional.one_hot(labels, 10).double().mean(dim=0) if self.config.target == "count"
                     else labels.double().mean().reshape(1))  # (k,)
        out: dict[str, dict[str, float]] = {"mean_target": {}, "baseline_mae": {}}
        for name, (_, positions) in self.sets.items():
            target = self.targets(name)[0].double()  # (1, N, k)
            out["mean_target"][name] = float(target.abs().mean())
            out["baseline_mae"][name] = float((target - positions.shape[1] * per_image).abs().mean())
        return out

    def evaluate(self, model, num_seeds: int, device=None) -> dict[str, Tensor]:
        """Per-seed metrics (S,) float64 on every fixed set (see the module docstring), with feature reuse, and a unit
        cell's recurrent weights (``recurrent_weight``, ``recurrent_offdiagonal``: the model's ``recurrent_weights``)."""
        metrics = {}
        for pool in ("validation", "test"):
            names = {n: pos for n, (p, pos) in self.sets.items() if p == pool}
            outputs = final_outputs(model, self.pools[pool][0], names, num_seeds, device=device)
            for name, pred in outputs.items():
                target, labels = self.targets(name)
                metrics[f"{name}_mae"] = mean_absolute_error(pred, target)
                metrics[f"{name}_exact"] = exact_share(pred, target)
                if name == "test1":
                    metrics["test1_digit_accuracy"] = digit_accuracy(pred, labels[:, 0])
        weights = model.recurrent_weights() if hasattr(model, "recurrent_weights") else []
        for name in weights[0] if weights else ():
            metrics[name] = torch.tensor([w[name] for w in weights], dtype=torch.float64)
        return metrics


def draw_sequences(images: Tensor, labels: Tensor, positions: np.ndarray, target: str, title: str, path) -> None:
    """A PNG of the first (at most 12) images of each sequence of ``positions`` into the pool ``images``, one row per
    sequence, each image with its digit and each row with its length and final target (in its first image's title)."""
    from nalm.engine.reporting import new_figure

    fig = new_figure()
    if fig is None:
        raise ConfigError("drawing needs matplotlib: pip install 'nalm[report]'")
    rows, cols = len(positions), min(12, positions.shape[1])
    fig.set_size_inches(1.0 * cols + 0.5, 1.2 * rows + 0.4)
    for r in range(rows):
        seq = torch.from_numpy(np.asarray(positions[r]))
        final = running_targets(labels[seq], target)[-1]
        text = f"sum {final.item():g}" if target == "sum" else "counts " + " ".join(f"{int(v)}" for v in final)
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.imshow(images[int(seq[c])].numpy(), cmap="gray_r")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(str(int(labels[int(seq[c])])), fontsize=8)
            if c == 0:
                ax.set_title(f"length {len(seq)}, {text}", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")


__all__ = ["MnistSequenceConfig", "MnistSequenceTask", "TARGETS", "MEAN", "STD", "normalize", "running_targets",
           "sequence_positions", "mean_absolute_error", "exact_share", "digit_accuracy", "final_outputs",
           "parse_lengths", "draw_sequences"]
