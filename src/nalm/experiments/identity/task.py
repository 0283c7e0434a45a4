"""Figure 1 of Trask et al. (2018, §1.1): MLPs fail to extrapolate the identity function.

A scalar autoencoder 1 -> 8 -> 8 -> 8 -> 1 (the nonlinearity on the hidden layers, a linear output) learns y = x on
[−5, 5] and is tested on [−20, 20]. Figure 1 plots, per nonlinearity, the mean absolute error over 100 models against
the input value: it grows outside the training range for every nonlinearity.

Worked example: the input 3.2 has the target 3.2; a ReLU6 network saturates past 6 and so answers ~6 for 15.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nalm.engine.ranges import Range, uniform_1_2
from nalm.engine.task import Task, evaluation_generator
from nalm.errors import ConfigError
from nalm.nn.models import ACTIVATIONS, mlp

#: The 15 nonlinearities of Figure 1, in the paper's legend order.
FIGURE1_ACTIVATIONS = ("hardtanh", "sigmoid", "relu6", "tanh", "tanhshrink", "hardshrink", "leakyrelu",
                       "softshrink", "softsign", "threshold", "relu", "prelu", "softplus", "elu", "selu")


@dataclass(frozen=True)
class IdentityConfig:
    interpolation_range: str = "-5,5"
    extrapolation_range: str = "-20,20"
    hidden_layers: tuple = (8, 8, 8)
    evaluation_size: int = 10_000
    #: Points of the error-against-input curve, evenly spaced over the extrapolation range.
    grid_points: int = 401

    def __post_init__(self) -> None:
        Range.parse(self.interpolation_range), Range.parse(self.extrapolation_range)
        if not all(isinstance(h, int) and h > 0 for h in self.hidden_layers):
            raise ConfigError(f"hidden_layers must be positive integers, got {self.hidden_layers!r}")


class IdentityTask(Task):
    name = "identity"
    input_size = 1
    output_size = 1

    def __init__(self, config: IdentityConfig, evaluation_seed: int = 0):
        self.config = config
        self.evaluation_seed = evaluation_seed  # the fixed sets' own stream, apart from every model seed
        self.interpolation = Range.parse(config.interpolation_range)
        self.extrapolation = Range.parse(config.extrapolation_range)

    def build_model(self, activation: str, num_seeds: int):
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose from: {', '.join(ACTIVATIONS)}")
        return mlp([1, *self.config.hidden_layers, 1], activation, num_seeds=num_seeds)

    def sample(self, bitgens, batch_size, buffer=None):
        u, buffer = uniform_1_2(bitgens, (batch_size, 1), buffer)
        x = torch.from_numpy(self.interpolation.transform(u, base=1.0))
        return x, x, buffer

    def evaluation_sets(self, seeds=None):
        sets = {}
        for k, (name, r) in enumerate((("interpolation", self.interpolation), ("extrapolation", self.extrapolation))):
            rng = evaluation_generator(self.evaluation_seed, k)
            x = torch.from_numpy(r.sample(rng, (1, self.config.evaluation_size, 1)))
            sets[name] = (x, x)
        return sets

    @torch.no_grad()
    def artifacts(self, model) -> dict:
        """Mean absolute error against the input (Figure 1's curve), over the seeds that did not diverge."""
        S = next(model.parameters()).shape[0]
        grid = torch.linspace(self.extrapolation.low, self.extrapolation.high, self.config.grid_points)
        x = grid.view(1, -1, 1).expand(S, -1, 1)
        err = (model(x) - x).abs().squeeze(-1).double()  # (S, G)
        ok = torch.isfinite(err).all(dim=1)
        mae = err[ok].mean(dim=0) if ok.any() else torch.full_like(grid, float("nan"), dtype=torch.float64)
        inside = (grid >= self.interpolation.low) & (grid <= self.interpolation.high)
        return {
            "error_curve": {"x": grid.tolist(), "mae": mae.tolist(), "models": int(ok.sum()),
                            "train_range": [self.interpolation.low, self.interpolation.high]},
            "summary": {"mae_inside": float(mae[inside].mean()), "mae_outside": float(mae[~inside].mean())},
        }
