"""The counting network of the MNIST parity task (Table 4 of Trask et al. 2018, §4.6) and its ablated last layers.

Trask et al. replace the final affine layer (before the softmax) of the counting network of Seguí, Pujol & Vitrià
("Learning to count with deep object features", CVPR workshops 2015) with a NAC, then ablate the NAC's constraints.
The body is the fully convolutional net of the public reproduction of Seguí et al. (fomorians/counting-mnist):

    canvas (B, 1, 100, 100)
    → conv 8 @ 7×7, stride 2, ReLU            (B, 8, 50, 50)
    → max-pool 2                                (B, 8, 25, 25)
    → conv 16 @ 3×3, dilation 2, ReLU           (B, 16, 25, 25)
    → conv 32 @ 3×3, ReLU                       (B, 32, 25, 25)
    → conv 1×1 to a per-location map (linear)   (B, map_channels, 25, 25)
    → fully connected 32, ReLU                  (B, 32)
    → the final layer                           (B, 6) logits, one per count of even digits 0–5

and only the final layer differs between the rows of the ablation (:data:`FINAL_LAYERS`).

The map is linear (a density-map output, as in counting networks): with a ReLU on its single channel, the 1×1
convolution was ≤ 0 at every location of 200 validation canvases at initialisation for 9 of the first 20 seeds of
the trainer's init stream, so no gradient reached the body and such a seed stayed at the majority class (seed 0:
33.8 % train accuracy after 300 steps at learning rates 1e-3 and 3e-3 alike; 72 % with the linear map).

``ParityNet`` is an ordinary single model; S seeds of it run as one module through the ensemble wrapper
(``nalm.nn.ensemble.Ensemble``), which stacks the parameters on a leading seed axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F_torch
from torch.nn.utils import skip_init

from nalm import functional as F
from nalm.errors import ConfigError, ShapeError
from nalm.units import get_unit

#: The final layers (the rows of Table 4) and what each computes from the features h (B, in) -> (B, classes).
FINAL_LAYERS: dict[str, str] = {
    "affine": "W h + b, free weights and a bias: the original network of Seguí et al. (2015)",
    "affine-nobias": "W h, free weights, no bias",
    "tanh": "tanh(Ŵ) h: weights squashed into (−1, 1), no bias",
    "sigmoid": "σ(M̂) h: weights squashed into (0, 1), no bias",
    "nac": "(tanh(Ŵ) ⊙ σ(M̂)) h: the NAC of Trask et al. (2018), no bias",
    "nau": "the NAU of Madsen & Johansen (2020): W clamped to [−1, 1] after each step, no bias",
    "nalu": "the NALU of Trask et al. (2018): a gated mix of a NAC and a log-space NAC",
}

#: The final layers that are nalm units (built with nalm.get_unit).
_UNIT_FINALS = ("nau", "nalu")
#: For the ablation layers: which parameters each has.
_ABLATIONS = {"affine": ("weight", "bias"), "affine-nobias": ("weight",), "tanh": ("W_hat",),
              "sigmoid": ("M_hat",), "nac": ("W_hat", "M_hat")}


def _uniform_(t: Tensor, bound: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=generator)


class AblationLinear(nn.Module):
    """A linear map whose weight is free, tanh(Ŵ), σ(M̂) or tanh(Ŵ) ⊙ σ(M̂) (the NAC, Trask et al. 2018, eq. 1),
    with a bias only for ``kind="affine"``: the constraint ablation of Table 4.

    (*, in) -> (*, out). The effective weight is recomputed from Ŵ, M̂ on every forward. Every weight parameter
    (W, Ŵ, M̂) starts Glorot-uniform, as the library's NAC does, and the bias at zero (TensorFlow's dense-layer
    defaults; the papers give no initialisation), so the rows differ only in their constraint.
    """

    def __init__(self, kind: str, in_features: int, out_features: int, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind not in _ABLATIONS:
            raise ConfigError(f"unknown ablation layer {kind!r}; choose from: {', '.join(_ABLATIONS)}")
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"AblationLinear: {arg} must be a positive integer, got {value!r}")
        self.kind, self.in_features, self.out_features = kind, in_features, out_features
        for name in _ABLATIONS[kind]:
            shape = (out_features,) if name == "bias" else (out_features, in_features)
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        bound = math.sqrt(6.0 / (self.in_features + self.out_features))
        for name in _ABLATIONS[self.kind]:
            if name == "bias":
                nn.init.zeros_(self.bias)
            else:
                _uniform_(getattr(self, name), bound, generator)

    @property
    def effective_weight(self) -> Tensor:
        """The weight the layer applies, (out, in)."""
        if self.kind == "tanh":
            return torch.tanh(self.W_hat)
        if self.kind == "sigmoid":
            return torch.sigmoid(self.M_hat)
        if self.kind == "nac":
            return F.nac_weight(self.W_hat, self.M_hat)
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        return F_torch.linear(x, self.effective_weight, self.bias if self.kind == "affine" else None)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, in_features={self.in_features}, out_features={self.out_features}"


def make_final_layer(final: str, in_features: int, out_features: int, *,
                     generator: torch.Generator | None = None) -> nn.Module:
    """The final layer ``final`` (a key of :data:`FINAL_LAYERS`) mapping (*, in) -> (*, out)."""
    if final not in FINAL_LAYERS:
        raise ConfigError(f"unknown final layer {final!r}; choose from: {', '.join(FINAL_LAYERS)}")
    if final in _UNIT_FINALS:
        if generator is None:
            return get_unit(final, in_features, out_features)  # initialised from the global generator
        with torch.random.fork_rng(devices=[]):  # the unit's own init draws from the global generator: discard it
            unit = get_unit(final, in_features, out_features)
        unit.reset_parameters(generator)
        return unit
    return AblationLinear(final, in_features, out_features, generator=generator)


class ParityNet(nn.Module):
    """The counting network of Seguí et al. (2015), as reproduced by fomorians/counting-mnist, with a choice of final
    layer (:data:`FINAL_LAYERS`) — the model of Table 4 of Trask et al. (2018).

    Input: canvases (B, H, W) or (B, 1, H, W), uint8 (scaled by 1/255 here, so a data set can stay uint8 until
    the batch) or float (used as given). Output: (B, num_classes) logits for a softmax / cross-entropy.

    ``generator`` makes the initialisation explicit; without it the layers draw from torch's global generator
    (which is what the ensemble wrapper seeds per model under ``torch.random.fork_rng``).
    Training hooks: :meth:`post_step` (the NAU's clamp) after each optimiser step, and :meth:`regularization_loss`
    (the NAU's sparsity term, zero for other final layers).
    """

    def __init__(self, final: str = "affine", *, canvas_size: int = 100, num_classes: int = 6,
                 channels: tuple[int, int, int] = (8, 16, 32), map_channels: int = 1, hidden: int = 32,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if final not in FINAL_LAYERS:
            raise ConfigError(f"unknown final layer {final!r}; choose from: {', '.join(FINAL_LAYERS)}")
        for name, value in (("canvas_size", canvas_size), ("num_classes", num_classes),
                            ("map_channels", map_channels), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ParityNet: {name} must be a positive integer, got {value!r}")
        if len(channels) != 3 or not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ConfigError(f"ParityNet: channels must be three positive integers, got {channels!r}")
        self.side = (canvas_size - 1) // 2 + 1  # conv 7×7, stride 2, padding 3
        self.side //= 2  # max-pool 2
        if self.side < 1:
            raise ConfigError(f"ParityNet: canvas_size {canvas_size} is too small (need at least 4 px)")
        self.final_name, self.canvas_size, self.num_classes = final, canvas_size, num_classes
        c1, c2, c3 = channels
        # skip_init: the layers' own initialisation would draw from the global generator; _reset_body draws instead.
        self.conv1 = skip_init(nn.Conv2d, 1, c1, 7, stride=2, padding=3)
        self.conv2 = skip_init(nn.Conv2d, c1, c2, 3, dilation=2, padding=2)
        self.conv3 = skip_init(nn.Conv2d, c2, c3, 3, padding=1)
        self.to_map = skip_init(nn.Conv2d, c3, map_channels, 1)
        self.fc = skip_init(nn.Linear, map_channels * self.side * self.side, hidden)
        self._reset_body(generator)  # the body first, then the final layer: every row starts from the same body
        self.final = make_final_layer(final, hidden, num_classes, generator=generator)

    def _reset_body(self, generator: torch.Generator | None) -> None:
        # PyTorch's default for Conv2d and Linear (kaiming_uniform with a = √5, i.e. U(±1/√fan_in) for weights and
        # biases), drawn from the given generator.
        for layer in (self.conv1, self.conv2, self.conv3, self.to_map, self.fc):
            fan_in = layer.weight[0].numel()
            _uniform_(layer.weight, 1 / math.sqrt(fan_in), generator)
            _uniform_(layer.bias, 1 / math.sqrt(fan_in), generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw every parameter from ``generator`` (the body first, then the final layer)."""
        self._reset_body(generator)
        self.final.reset_parameters(generator)

    def features(self, x: Tensor) -> Tensor:
        """The input of the final layer: (B, H, W) or (B, 1, H, W) -> (B, hidden)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-2:] != (self.canvas_size, self.canvas_size):
            raise ShapeError(f"ParityNet expects canvases (B, {self.canvas_size}, {self.canvas_size}) or "
                             f"(B, 1, {self.canvas_size}, {self.canvas_size}), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.to(self.fc.weight.dtype) / 255.0
        x = F_torch.max_pool2d(F_torch.relu(self.conv1(x)), 2)  # (B, c1, side, side)
        x = F_torch.relu(self.conv2(x))  # (B, c2, side, side)
        x = F_torch.relu(self.conv3(x))  # (B, c3, side, side)
        x = self.to_map(x)  # (B, map, side, side): per-location evidence, linear (see the module docstring)
        return F_torch.relu(self.fc(x.flatten(1)))  # (B, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.final(self.features(x))  # (B, hidden) -> (B, num_classes)

    def post_step(self) -> None:
        """Apply the final layer's constraint (the NAU clamps W to [−1, 1]); call after each optimiser step."""
        if hasattr(self.final, "post_step"):
            self.final.post_step()

    def regularization_loss(self) -> Tensor:
        """The final layer's unscaled sparsity regulariser (the NAU's), or 0 for a final layer without one."""
        if hasattr(self.final, "regularization_loss"):
            return self.final.regularization_loss()
        return self.fc.weight.new_zeros(())

    def extra_repr(self) -> str:
        return f"final={self.final_name!r}, canvas_size={self.canvas_size}, num_classes={self.num_classes}"
