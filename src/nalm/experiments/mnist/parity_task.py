"""MNIST parity canvases: the data of Table 4 (Trask et al. 2018, §4.6), a documented stand-in.

The NALU paper replaces the final affine layer of the counting network of Seguí, Pujol & Vitrià ("Learning to count
with deep object features", CVPR workshops 2015) by a NAC. Their data set is not available, so we rebuild it the
way the public reproduction of Seguí et al. (fomorians/counting-mnist) describes it:

- a square greyscale canvas (100 × 100 px) holds between ``min_digits`` and ``max_digits`` MNIST digits (0–5),
  the count drawn uniformly;
- each digit lies wholly inside the canvas; the digit centres keep a minimum distance (20 px by default, so digits
  stay legible). The placement of a canvas is drawn uniformly among all valid placements (whole-placement
  rejection sampling: up to ``max_tries`` candidate placements per canvas);
- overlapping pixels are summed and clipped to 255 (uint8);
- the target is the number of even digits on the canvas, a class 0–``max_digits`` (softmax, cross-entropy).

Worked example (max_digits=5): a canvas with the digits 3, 8, 4 has target 2 (8 and 4 are even); an empty canvas
has target 0. With the count uniform in 0..5 and about half of MNIST's digits even, class 0 is the most frequent
(about a third of the canvases): the accuracy of always answering 0 is the floor a model must clear.

The canvases are one fixed data set shared by all model seeds (each seed walks its own order through it): train
canvases are built from MNIST-train less a held-out part, validation canvases from that held-out part, test canvases
from MNIST-test (:func:`make_splits`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from nalm.engine.task import Task, evaluation_generator, seed_order
from nalm.errors import ConfigError, ShapeError

#: Canvases rendered per block: bounds the work buffer of unclipped sums (block × H × W × 2 bytes).
_BLOCK = 1024


def _max_points(side: float, distance: float) -> float:
    """An upper bound on how many points with pairwise distance ≥ ``distance`` fit in a square of side ``side``.

    Oler's inequality (Oler 1961, for any convex region K with points at mutual distance ≥ 1):
    n ≤ (2/√3)·area(K) + perimeter(K)/2 + 1; here K is the square of top-left positions, scaled by 1/distance.
    For two points the exact condition is that the diagonal is long enough.
    """
    if distance <= 0:
        return math.inf
    s = side / distance
    bound = 2 / math.sqrt(3) * s * s + 2 * s + 1
    return bound if s * math.sqrt(2) >= 1 else 1.0


@dataclass(frozen=True)
class ParityConfig:
    """The MNIST parity data; every field is a CLI option. Geometry after fomorians/counting-mnist (see above)."""

    canvas_size: int = 100
    #: The side of the digit images (MNIST: 28); the images passed in must have this shape.
    digit_size: int = 28
    min_digits: int = 0
    max_digits: int = 5
    #: The minimum distance between two digit centres, in pixels.
    min_distance: float = 20.0
    #: Candidate placements drawn per canvas before giving up (a ConfigError: the canvas is too crowded).
    max_tries: int = 10_000
    #: Canvases per split (see :func:`make_splits`).
    train_size: int = 20_000
    validation_size: int = 2_000
    test_size: int = 10_000
    #: MNIST-train images held out (never on a train canvas) to build the validation canvases from.
    held_out_digits: int = 5_000

    def __post_init__(self) -> None:
        for name in ("canvas_size", "digit_size", "max_digits", "max_tries", "train_size", "validation_size",
                     "test_size", "held_out_digits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.min_digits, int) or isinstance(self.min_digits, bool) \
                or not 0 <= self.min_digits <= self.max_digits:
            raise ConfigError(f"min_digits must be an integer in [0, max_digits={self.max_digits}], "
                              f"got {self.min_digits!r}")
        if not isinstance(self.min_distance, (int, float)) or isinstance(self.min_distance, bool) \
                or not 0 <= self.min_distance < math.inf:
            raise ConfigError(f"min_distance must be a finite number >= 0, got {self.min_distance!r}")
        if self.digit_size > self.canvas_size:
            raise ConfigError(f"canvas_size {self.canvas_size} is smaller than a digit ({self.digit_size} px)")
        if self.max_digits > _max_points(self.span, self.min_distance):
            raise ConfigError(
                f"{self.max_digits} digits cannot keep min_distance {self.min_distance} px on a {self.canvas_size} px "
                f"canvas (digit centres range over {self.span + 1} × {self.span + 1} px): lower max_digits or "
                f"min_distance, or raise canvas_size")

    @property
    def span(self) -> int:
        """The range of a digit's top-left (and centre) coordinate: 0 … span, so the digit stays on the canvas."""
        return self.canvas_size - self.digit_size

    @property
    def num_classes(self) -> int:
        """Targets are 0 … max_digits even digits."""
        return self.max_digits + 1


@dataclass(frozen=True)
class CanvasMeta:
    """What lies on each canvas; slots past a canvas's digit count hold -1.

    ``labels`` (N, max_digits) int64: the digit classes; ``positions`` (N, max_digits, 2) int64: the top-left
    (row, column) of each digit; ``sources`` (N, max_digits) int64: each digit's index into the image pool.
    """

    labels: np.ndarray
    positions: np.ndarray
    sources: np.ndarray
    digit_size: int

    @property
    def counts(self) -> np.ndarray:
        """Digits per canvas, (N,) int64."""
        return (self.labels >= 0).sum(axis=1)

    @property
    def centres(self) -> np.ndarray:
        """Digit centres (row, column) in pixels, (N, max_digits, 2) float64, NaN in empty slots."""
        centres = self.positions + self.digit_size / 2
        centres[self.labels < 0] = np.nan
        return centres

    def digits(self, i: int) -> list[tuple[int, tuple[float, float]]]:
        """Canvas ``i``'s digits as (label, (row, column) of the centre)."""
        c = self.centres[i]
        return [(int(self.labels[i, j]), (float(c[j, 0]), float(c[j, 1]))) for j in range(int(self.counts[i]))]

    def __len__(self) -> int:
        return len(self.labels)


class ParitySplit(NamedTuple):
    canvases: np.ndarray  # (N, H, W) uint8
    targets: np.ndarray  # (N,) int64
    meta: CanvasMeta


def parity_targets(labels: np.ndarray) -> np.ndarray:
    """The number of even digits per canvas from padded labels (N, max_digits) (-1 = empty): (N,) int64."""
    labels = np.asarray(labels)
    return ((labels >= 0) & (labels % 2 == 0)).sum(axis=1).astype(np.int64)


def _check_pool(images: np.ndarray, labels: np.ndarray, config: ParityConfig) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3 \
            or images.shape[1:] != (config.digit_size, config.digit_size):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ShapeError(f"images must be a uint8 array (P, {config.digit_size}, {config.digit_size}) "
                         f"(digit_size={config.digit_size}), got {got}")
    if len(images) == 0:
        raise ShapeError("images is empty: need at least one digit image to draw from")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError(f"labels must be integers of shape ({len(images)},) to match images, "
                         f"got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() > 9:
        raise ShapeError(f"labels must be digit classes 0–9, got values in [{labels.min()}, {labels.max()}]")


def _place(count: int, n: int, rng: np.random.Generator, config: ParityConfig) -> np.ndarray:
    """Top-left positions (n, count, 2) of ``count`` digits on each of n canvases, centres ≥ min_distance apart.

    Whole-placement rejection: every canvas draws all its positions at once and redraws them all while any pair
    is too close, so a placement is uniform among the valid ones. Vectorised over the canvases still pending.
    """
    positions = rng.integers(0, config.span + 1, size=(n, count, 2))
    if count < 2 or config.min_distance == 0:
        return positions
    rows, cols = np.triu_indices(count, 1)
    limit = config.min_distance ** 2
    pending = np.arange(n)
    for _ in range(config.max_tries):
        p = positions[pending]
        d2 = ((p[:, rows] - p[:, cols]) ** 2).sum(axis=-1)  # (n', pairs)
        pending = pending[(d2 < limit).any(axis=1)]
        if len(pending) == 0:
            return positions
        positions[pending] = rng.integers(0, config.span + 1, size=(len(pending), count, 2))
    raise ConfigError(
        f"could not place {count} digits with centres {config.min_distance} px apart on a {config.canvas_size} px "
        f"canvas in {config.max_tries} tries: the canvas is too crowded; lower max_digits or min_distance, raise "
        f"canvas_size, or raise max_tries")


def make_canvases(images: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator,
                  config: ParityConfig = ParityConfig()) -> ParitySplit:
    """Draw ``count`` canvases from a pool of digit images.

    ``images`` uint8 (P, d, d) with d = ``config.digit_size``, ``labels`` (P,) digit classes 0–9; each digit is
    drawn uniformly (with replacement) from the pool. Returns ``(canvases uint8 (N, H, W), targets int64 (N,),
    meta)``, a :class:`ParitySplit`. Deterministic: the same generator state, pool and count give the same canvases.
    """
    _check_pool(images, labels, config)
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
        raise ConfigError(f"count must be an integer >= 0, got {count!r}")
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    k, d, size = config.max_digits, config.digit_size, config.canvas_size
    counts = rng.integers(config.min_digits, k + 1, size=count)  # (N,)
    sources = rng.integers(0, len(images), size=(count, k))  # (N, k)
    positions = np.full((count, k, 2), -1, dtype=np.int64)
    for c in range(1, k + 1):
        idx = np.flatnonzero(counts == c)
        if len(idx):
            positions[idx, :c] = _place(c, len(idx), rng, config)
    empty = np.arange(k) >= counts[:, None]  # (N, k): slots past the count
    sources[empty] = -1
    digit_labels = np.where(empty, -1, np.asarray(labels, dtype=np.int64)[np.maximum(sources, 0)])

    canvases = np.empty((count, size, size), dtype=np.uint8)
    offsets = np.arange(d)
    wide = np.uint16 if k * 255 <= np.iinfo(np.uint16).max else np.uint32  # the sum of k digits must fit
    buffer = np.zeros((min(count, _BLOCK), size, size), dtype=wide)
    for start in range(0, count, _BLOCK):
        stop = min(start + _BLOCK, count)
        work = buffer[:stop - start]
        work.fill(0)
        for j in range(k):
            on = np.flatnonzero(counts[start:stop] > j)  # canvases of this block with a digit in slot j
            if len(on) == 0:
                continue
            top = positions[start + on, j]  # (n, 2)
            r = (top[:, 0, None] + offsets)[:, :, None]  # (n, d, 1)
            q = (top[:, 1, None] + offsets)[:, None, :]  # (n, 1, d)
            # Each canvas appears once per slot, so the fancy-indexed += adds every pixel exactly once.
            work[on[:, None, None], r, q] += images[sources[start + on, j]]
        np.minimum(work, 255, out=work)
        canvases[start:stop] = work
    meta = CanvasMeta(labels=digit_labels, positions=positions, sources=sources, digit_size=d)
    return ParitySplit(canvases, parity_targets(digit_labels), meta)


def make_splits(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                test_labels: np.ndarray, config: ParityConfig = ParityConfig(), seed: int = 0,
                splits: Sequence[str] = ("train", "validation", "test")) -> dict[str, ParitySplit]:
    """The fixed train / validation / test canvases, shared by all model seeds.

    ``config.held_out_digits`` MNIST-train images (a random subset) are held out: validation canvases are drawn
    from them only, train canvases from the rest; test canvases from MNIST-test. Every split has its own
    generator (:func:`~nalm.engine.task.evaluation_generator` of ``seed``), so a split does not change when another
    split's size does. ``splits`` names the ones to build.
    """
    unknown = set(splits) - {"train", "validation", "test"}
    if unknown:
        raise ConfigError(f"unknown split(s) {sorted(unknown)}; choose from train, validation, test")
    n = len(train_images)
    if not config.held_out_digits < n:
        raise ConfigError(f"held_out_digits {config.held_out_digits} must be smaller than the {n} training images")
    order = evaluation_generator(seed, 0).permutation(n)
    held, kept = np.sort(order[:config.held_out_digits]), np.sort(order[config.held_out_digits:])
    pools = {"train": (train_images[kept], np.asarray(train_labels)[kept], config.train_size, 1),
             "validation": (train_images[held], np.asarray(train_labels)[held], config.validation_size, 2),
             "test": (test_images, test_labels, config.test_size, 3)}
    return {name: make_canvases(pools[name][0], pools[name][1], pools[name][2],
                                evaluation_generator(seed, pools[name][3]), config) for name in splits}


def synthetic_digits(count: int, size: int, seed: int, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for MNIST (tests, smoke runs, machines without the data): ``count`` images (count, size, size)
    uint8 of faint noise with a bright square whose place encodes the label, and the labels (count,) int64, every
    class present when count >= 10. Deterministic in (``seed``, ``index``): use one index per pool (train, test).
    A small conv net tells the classes apart."""
    if not isinstance(size, int) or size < 4:
        raise ConfigError(f"synthetic digits need a size of at least 4 px, got {size!r}")
    rng = evaluation_generator(seed, 100 + index)
    labels = rng.permutation(np.arange(count) % 10).astype(np.int64)
    images = rng.integers(0, 60, (count, size, size), dtype=np.uint8)
    block = max(2, size // 4)
    for i, d in enumerate(labels):
        r, c = (d // 4) * (size - block) // 2, (d % 4) * (size - block) // 3  # a 3 × 4 grid of places
        images[i, r:r + block, c:c + block] = 255
    return images, labels


class ParityTask(Task):
    """The trainer's view of fixed parity canvases (:func:`make_splits`): a softmax over the even-digit count.

    Training batches: each seed walks its own shuffled order of the train canvases (:func:`seed_order`), x (S, B, H,
    W) uint8 (the network scales it), y (S, B) int64; loss: per-seed cross-entropy. Evaluation, per seed on the
    fixed sets ``train`` (the first ``validation`` train canvases: how well the training data are fitted),
    ``validation`` and ``test``: ``<set>_accuracy``, ``<set>_error`` (= 1 − accuracy) and ``<set>_loss`` (mean
    cross-entropy). The best step is the one of lowest validation error (the first, on ties).
    """

    name = "mnist-parity"
    selection_metric = "validation_error"
    finite_metrics = ("validation_loss",)
    success_metric = None
    threshold = None

    def __init__(self, splits: dict[str, ParitySplit], seeds, num_classes: int, chunk: int = 500) -> None:
        missing = {"train", "validation", "test"} - set(splits)
        if missing:
            raise ConfigError(f"ParityTask needs the train, validation and test splits; missing {sorted(missing)}")
        self.seeds, self.num_classes, self.chunk = list(seeds), num_classes, chunk
        train = splits["train"]
        self.x, self.y = torch.from_numpy(train.canvases), torch.from_numpy(train.targets)
        n = len(splits["validation"].targets)
        self.sets = {"train": (self.x[:n], self.y[:n])}
        self.sets.update({k: (torch.from_numpy(splits[k].canvases), torch.from_numpy(splits[k].targets))
                          for k in ("validation", "test")})
        self.input_size, self.output_size = tuple(self.x.shape[1:]), num_classes
        self.references = reference_accuracies(splits["test"].targets, num_classes, train.targets)

    def batch(self, step, bitgens, batch_size, buffer=None):
        idx = torch.from_numpy(seed_order(self.seeds, step, batch_size, len(self.y)))  # (S, B)
        return self.x[idx], self.y[idx], None

    def loss(self, output, y):
        from nalm.engine.metrics import per_seed_cross_entropy

        return per_seed_cross_entropy(output, y)

    @torch.no_grad()
    def evaluate(self, model, num_seeds, device=None):
        out = {}
        for name, (x, y) in self.sets.items():
            correct = torch.zeros(num_seeds, dtype=torch.float64)
            ce = torch.zeros(num_seeds, dtype=torch.float64)
            for i in range(0, len(y), self.chunk):
                xc, yc = x[i:i + self.chunk], y[i:i + self.chunk]
                logits = model(xc.unsqueeze(0).expand((num_seeds,) + xc.shape).to(device)).float().cpu()  # (S, n, C)
                correct += (logits.argmax(-1) == yc).sum(1).double()
                ce += torch.nn.functional.cross_entropy(logits.transpose(1, 2), yc.expand(num_seeds, -1),
                                                        reduction="none").sum(1).double()
            out[f"{name}_accuracy"] = correct / len(y)
            out[f"{name}_error"] = 1 - correct / len(y)
            out[f"{name}_loss"] = ce / len(y)
        return out

    def artifacts(self, model) -> dict:
        """The trivial references on the test canvases (:func:`reference_accuracies`)."""
        return {"references": self.references}


def reference_accuracies(targets: np.ndarray, num_classes: int,
                         train_targets: np.ndarray | None = None) -> dict[str, float]:
    """The trivial reference points on ``targets`` (N,) with classes 0 … num_classes − 1.

    - ``majority``: the accuracy of always answering the most frequent class (of ``train_targets`` when given,
      as a model would learn it, else of ``targets`` itself);
    - ``uniform``: the expected accuracy of a uniform random guess, 1 / num_classes;
    - ``prior``: the expected accuracy of guessing each class with its frequency in the train targets (Σ p_k q_k,
      p the train frequencies, q the frequencies of ``targets``).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    q = _frequencies(targets, num_classes, "targets")
    p = q if train_targets is None else _frequencies(train_targets, num_classes, "train_targets")
    return {"majority": float(q[int(np.argmax(p))]), "uniform": 1.0 / num_classes, "prior": float((p * q).sum())}


def _frequencies(targets: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim != 1 or len(targets) == 0 or not np.issubdtype(targets.dtype, np.integer):
        raise ShapeError(f"{name} must be a non-empty 1-d integer array, got {targets.dtype} {targets.shape}")
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ShapeError(f"{name} must lie in 0 … {num_classes - 1}, "
                         f"got values in [{targets.min()}, {targets.max()}]")
    return np.bincount(targets, minlength=num_classes) / len(targets)


def render_grid(path: str | Path, canvases: np.ndarray, targets: np.ndarray, *, meta: CanvasMeta | None = None,
                predictions: np.ndarray | None = None, columns: int = 4, title: str | None = None) -> Path:
    """Write a PNG grid of canvases, each titled with its target (and its digits, and a model's prediction).

    For ``nalm sample mnist-parity --png FILE``. Uses matplotlib's Agg canvas without pyplot (no global state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    canvases, targets = np.asarray(canvases), np.asarray(targets)
    if canvases.ndim != 3 or len(canvases) == 0 or targets.shape != (len(canvases),):
        raise ShapeError(f"render_grid expects canvases (N, H, W) with N >= 1 and targets (N,), got "
                         f"{canvases.shape} and {targets.shape}")
    if predictions is not None and np.shape(predictions) != targets.shape:
        raise ShapeError(f"predictions must have the shape of targets {targets.shape}, got {np.shape(predictions)}")
    if not isinstance(columns, int) or columns < 1:
        raise ConfigError(f"columns must be a positive integer, got {columns!r}")
    n = len(canvases)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(2.2 * cols, 2.5 * rows + (0.4 if title else 0)), layout="constrained")
    FigureCanvasAgg(fig)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(canvases[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        label = f"even: {int(targets[i])}"
        if predictions is not None:
            label += f"  pred: {int(predictions[i])}"
        if meta is not None:
            digits = " ".join(str(lab) for lab, _ in meta.digits(i))
            label += f"\ndigits: {digits or '—'}"
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, format="png", dpi=80)
    return path
