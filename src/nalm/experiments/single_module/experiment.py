"""``single-module``: the NALM Primer's benchmark (Mistry, Farrahi & Hare, JMLR 2022, §5): every arithmetic unit as
one layer 2 → 1 on y = x₁ op x₂, nine range pairs, four operations. One configuration (unit, operation) trains all
its ranges at once: the seed axis carries (range, seed) slots (:mod:`.task`)."""

from __future__ import annotations

import dataclasses

from nalm.engine.experiment import Experiment, RunSpec, register_experiment
from nalm.engine.metrics import summarize
from nalm.engine.ranges import Range
from nalm.engine.task import seed_generators
from nalm.engine.train import Regularizer, TrainConfig, TrainResult, train
from nalm.errors import ConfigError
from nalm.units import get_unit, list_units

from . import report as single_report
from .task import RANGES, SingleModuleConfig, SingleModuleTask, stream_id, success_threshold

#: Which unit runs on which operation, as in the Primer's Figures 14–17: additive units on + and −, multiplicative
#: units on × and on ÷ where they can divide (the NMU and sNMU cannot), the NALU family (NALU, G-NALU, iNALU) on all
#: four. The grids take their units from here.
NALU_FAMILY = ("nalu", "gnalu", "inalu")
UNITS: dict[str, tuple[str, ...]] = {
    "add": ("nac", "nau", "mcfc", *NALU_FAMILY),
    "sub": ("nac", "nau", "mcfc", *NALU_FAMILY),
    "mul": ("nac_mul", "nmu", "snmu", "nru", "nmru", "npu", "realnpu", *NALU_FAMILY),
    "div": ("nac_mul", "nru", "nmru", "npu", "realnpu", *NALU_FAMILY),
}
#: The Primer's learning rates: Adam 10⁻³, the NPUs 5·10⁻³ (Heim et al. 2020).
LEARNING_RATE = {"npu": 5e-3, "realnpu": 5e-3}
#: Elementwise gradient clipping, as the iNALU's authors train it (Schlör et al. 2020; on in the Primer's runs).
GRAD_CLIP_VALUE = {"inalu": 0.1}
#: Unit options of the benchmark (part of its protocol: a change needs a new ``protocol``): the iNALU with its
#: authors' re-initialisation aid, as in the Primer's runs; the NMRU in the sign-retrieval form the division paper
#: trains.
UNIT_OPTIONS: dict[str, dict] = {"inalu": {"reinit": True}, "nmru": {"sign_retrieval": True}}
#: The iNALU's own regulariser: λ 1 from step 10,000 (its authors' schedule).
INALU_REGULARIZER = Regularizer(1.0, 10_000, 10_000)
#: Sparsity regularisers, ramped over steps 20,000–35,000 (the Primer's protocol): NAU λ 0.01, NMU λ 10; the NMU's
#: successors (sNMU, NRU, NMRU) the NMU's.
RAMP = (20_000, 35_000)
SCALES = {"nau": 0.01, "nmu": 10.0, "snmu": 10.0, "nru": 10.0, "nmru": 10.0}
#: Regularisers of single units, added to the shared table only in their own runs: the MC-FC's (λ 10 over the
#: ramp, the Primer's default scale, with which its authors ran it); the NPUs' L1 with β × 10 every 10,000 steps,
#: 10⁻⁷ → 10⁻⁵ on ×, 10⁻⁹ → 10⁻⁷ on ÷ (Heim et al. 2020, as the Primer runs them).
OWN_SCALES = {"mcfc": 10.0}
NPU_L1 = {"mul": (1e-7, 1e-5), "div": (1e-9, 1e-7)}
ITERATIONS, SEEDS = 50_000, 25
#: ``quick``: the picture in ≤ 3 minutes of one core: the claims' units and a contrast on four ranges (a negative,
#: the one across zero, two positive), 5 seeds × 10,000 steps with the ramp compressed into steps 4,000–7,000 (at
#: 5,000 steps 1 of 5 NAU seeds on some ranges was still on its way below the threshold).
QUICK_UNITS = {"add": ("nau", "nac"), "sub": ("nau",), "mul": ("nmu", "realnpu"), "div": ("realnpu",)}
QUICK_RANGES, QUICK_SEEDS, QUICK_ITERATIONS = "1,4,6,8", 5, 10_000


def train_config(unit: str, operation: str = "mul", iterations: int = ITERATIONS, seeds: int = SEEDS,
                 scale: float = 1.0, **more) -> TrainConfig:
    """The Primer's protocol for ``unit`` on ``operation`` (batch 128, evaluation every 1,000 steps), the ramps and
    steps scaled by ``scale``; ``more``: other TrainConfig fields (they override the unit's learning rate and
    clipping)."""
    start, end = (int(scale * t) for t in RAMP)
    regs = {u: Regularizer(s, start, end).stored() for u, s in SCALES.items()} | {"inalu": INALU_REGULARIZER.stored()}
    if unit in OWN_SCALES:
        regs[unit] = Regularizer(OWN_SCALES[unit], start, end).stored()
    if unit in ("npu", "realnpu"):
        initial, final = NPU_L1.get(operation, NPU_L1["mul"])
        regs[unit] = Regularizer(final, 0, int(scale * 20_000), initial=initial).stored()
    more = {"learning_rate": LEARNING_RATE.get(unit, 1e-3), "grad_clip_value": GRAD_CLIP_VALUE.get(unit), **more}
    return TrainConfig(iterations=iterations, seeds=seeds, regularizers=regs, **more)


#: Seconds of one core per step (a) and per step and slot (b) at 2 inputs, batch 128 and an evaluation of 2 × 10,000
#: rows every 1,000 steps (folded in). Fitted to ``nalm bench single-module --units <all 13> --steps 1000`` on the
#: idle 2-core machine (torch 2.13, one thread): a + 225·b is the all-ranges row's time per step, 9·(a + 25·b) the
#: per-range row's. A unit not listed gets COST_DEFAULT.
COST = {"nac": (5.6e-04, 5.7e-06), "nau": (4.2e-04, 1.5e-05), "mcfc": (7.6e-04, 4.9e-06), "nalu": (8.6e-04, 5.1e-06),
        "gnalu": (1.0e-03, 6.6e-06), "inalu": (1.2e-03, 1.0e-05), "nac_mul": (5.6e-04, 5.1e-06),
        "nmu": (4.8e-04, 1.1e-05), "snmu": (6.9e-04, 1.2e-05), "nru": (5.0e-04, 1.5e-05), "nmru": (5.4e-04, 1.2e-05),
        "npu": (1.1e-03, 1.3e-05), "realnpu": (8.9e-04, 9.4e-06)}
COST_DEFAULT = (1.0e-3, 1.5e-5)


def full_grid(units: dict[str, tuple[str, ...]]) -> list[RunSpec]:
    """The whole benchmark for a unit table (operation -> units): each unit on its operations, all nine ranges,
    25 seeds × 50,000 steps; and the division paper's input redundancy (input size 10) for the NMRU and RealNPU
    on ÷ where the table has them (a claim)."""
    specs = [RunSpec("single-module", u, {"operation": op}, train_config(u, op)) for op, us in units.items() for u in us]
    return specs + [RunSpec("single-module", u, {"operation": "div", "input_size": 10}, train_config(u, "div"))
                    for u in ("nmru", "realnpu") if u in units.get("div", ())]


@register_experiment
class SingleModule(Experiment):
    name = "single-module"
    help = "the NALM Primer's single-module benchmark: every unit, nine ranges, + − × ÷"
    description = ("Mistry, Farrahi & Hare (2022, §5): y = x₁ op x₂ from one layer of one unit; trained on an "
                   "interpolation range, tested on its extrapolation range, for nine range pairs at once (the seed "
                   "axis carries (range, seed) slots). Success: test MSE below that of the ε-perturbed exact "
                   "solution of its range. --seeds is per range.")
    Config = SingleModuleConfig
    models = tuple(dict.fromkeys(u for units in UNITS.values() for u in units))
    default_model = "nmu"
    model_help = "a registered unit as one layer input_size → 1: " + "; ".join(
        f"{op}: {', '.join(units)}" for op, units in UNITS.items())
    protocol = 1
    #: The Primer's protocol for ``nalm run`` (``--learning-rate 5e-3`` for the NPUs, elementwise clipping at 0.1
    #: for the iNALU: the profiles set them).
    train_defaults = {"seeds": SEEDS, "regularizers": train_config("nau").regularizers}
    splits = ("train", "interpolation", "extrapolation")
    smoke = {"ranges": "0", "evaluation_size": 50}
    claims = single_report.CLAIMS

    def check_model(self, model: str) -> None:
        if model not in list_units():
            raise ConfigError(f"unknown unit {model!r} for {self.name}; registered: {', '.join(list_units())}")

    def slots(self, config: SingleModuleConfig, train: TrainConfig) -> list[tuple[int, int]]:
        """The (range, seed) pairs of a run, range-major: ``train.seeds`` seeds on each of the config's ranges."""
        return [(r, s) for r in config.range_indices for s in train.seed_ids]

    def model(self, config, model, num_seeds):
        return get_unit(model, config.input_size, 1, num_seeds=num_seeds, **UNIT_OPTIONS.get(model, {}))

    def train(self, spec: RunSpec, *, store=None, key=None, progress=False, device=None) -> TrainResult:
        """Every slot of ``spec`` as one seed axis; each record gains its ``range`` and ``model_seed``."""
        config = spec.task_config()
        slots = self.slots(config, spec.train)
        task = SingleModuleTask(config, slots)
        model = self.model(config, spec.model, len(slots))
        result = train(model, task, spec.train, store=store, key=key, progress=progress, desc=spec.name,
                       device=device, seeds=[stream_id(r, s) for r, s in slots])
        for record, (r, s) in zip(result.records, slots):
            record.update(range=r, model_seed=s)
        return result

    def summarize(self, spec, result):
        """Per range (in order): the Madsen & Johansen statistics (success rate, Wilson 95 % interval, solved-at
        median, sparsity error mean) and the threshold; over all: the mean success rate over the ranges."""
        config = spec.task_config()
        ranges = []
        for r in config.range_indices:
            s = summarize([x for x in result.records if x["range"] == r])
            ranges.append({"range": r, "interpolation": str(Range.parse(RANGES[r][0])),
                           "extrapolation": str(Range.parse(RANGES[r][1])),
                           **{k: s[k] for k in ("seeds", "successes", "success_rate", "success_ci",
                                                "solved_at_median", "sparsity_error_mean", "diverged")},
                           "threshold": success_threshold(config.operation, r, config.input_size, config.eps)})
        rates = [x["success_rate"] for x in ranges]
        return {"operation": config.operation, "model": spec.model, "seeds": len(result.records),
                "seeds_per_range": spec.train.seeds,
                "success_rate": sum(rates) / len(rates), "successes": sum(x["successes"] for x in ranges),
                "ranges": ranges}

    def run_name(self, config, model):
        name = f"{self.name}/{model}/{config.operation}"
        name += "" if config.ranges == "all" else f"/ranges={config.ranges}"
        return name + ("" if config.input_size == 2 else f"/inputs={config.input_size}")

    def grid(self, profile):
        """quick: :data:`QUICK_UNITS` on :data:`QUICK_RANGES`; acceptance and paper: :func:`full_grid` of
        :data:`UNITS`."""
        if profile == "quick":
            return [RunSpec(self.name, u, {"operation": op, "ranges": QUICK_RANGES},
                            train_config(u, op, QUICK_ITERATIONS, QUICK_SEEDS, scale=0.2))
                    for op, units in QUICK_UNITS.items() for u in units]
        return full_grid(UNITS)

    def cost(self, spec):
        """Seconds of one core (:data:`COST`); the slots' work grows with the inputs and the batch."""
        c, tr = spec.task_config(), spec.train
        a, b = COST.get(spec.model, COST_DEFAULT)
        slots = len(c.range_indices) * tr.seeds
        return tr.iterations * (a + b * slots * c.input_size / 2 * tr.batch_size / 128)

    def report(self, ctx):
        return single_report.section(self, ctx)

    def sample(self, config, split, count, seed):
        """``count`` rows of each of the config's ranges for model seed ``seed``: the inputs and the target."""
        out = []
        for r in config.range_indices:
            task = SingleModuleTask(dataclasses.replace(config, ranges=str(r)), [(r, seed)])
            if split == "train":
                x = task.sample([g.bit_generator for g in seed_generators([stream_id(r, seed)], "data")], count)[0][0]
            else:
                x = task.range_sets(r)[split][:count]
            y = task.targets(x)
            out += [{"range": r, "x": [round(float(v), 4) for v in x[i]], "target": float(y[i, 0])}
                    for i in range(x.shape[0])]
        return out
