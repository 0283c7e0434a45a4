"""The maths of every unit, as pure functions of tensors.

Shape convention: weights are ``(*S, out, in)`` and inputs ``(*S, B, in)``, where ``*S`` is the seed axis
(empty for a single model, ``(S,)`` for S stacked models). Every function broadcasts over it, so one code path
serves a single model and S independent copies; no operation mixes seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "nac_weight",
    "linear",
    "log_magnitude",
    "nac_mul",
    "gated_mix",
    "nalu",
    "nmu",
    "inalu",
    "npu",
    "nru",
    "nmru",
    "snmu",
    "mcfc",
    "mcfc_mul",
    "splitmix_uniform",
    "nau_sparsity",
    "nmu_sparsity",
    "inalu_sparsity",
    "sparsity_error",
]


def nac_weight(w_hat: Tensor, m_hat: Tensor, log_base: float = 1.0) -> Tensor:
    """NAC weight W = tanh(Ŵ) ⊙ σ(M̂) (Trask et al. 2018, eq. 1): biased towards {-1, 0, 1}.

    With ``log_base`` = ln b the tanh and σ are taken to base b instead of e: σ_b(t) = 1 / (1 + b^−t) = σ(t ln b),
    tanh_b(t) = tanh(t ln b) (the golden-ratio NALU's weights, b = φ).
    """
    if log_base != 1.0:
        w_hat, m_hat = w_hat * log_base, m_hat * log_base
    return torch.tanh(w_hat) * torch.sigmoid(m_hat)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b outside autograd. On the CPU it goes through numpy's matmul (OpenBLAS), which ran the batched
    products of these units — (S, 128, 100) @ (S, 100, 2) — about three times faster than torch's own CPU kernel
    on our machine (benchmarks/README.md); elsewhere it is torch.matmul."""
    if _numpy_ok(a) and _numpy_ok(b) and a.dtype == b.dtype:
        with np.errstate(all="ignore"):  # NaN and inf propagate silently, as in torch
            return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))
    return a @ b


_NUMPY_FLOATS = (torch.float32, torch.float64)


def _numpy_ok(t: Tensor) -> bool:
    """Whether ``t`` may take a numpy fast path: a plain CPU float tensor with storage (not one that torch.func's
    vmap or grad wraps, which has none)."""
    return t.device.type == "cpu" and t.dtype in _NUMPY_FLOATS and not _functorch_wrapped(t)


_functorch_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda t: False)


class _Linear(torch.autograd.Function):
    """x Wᵀ with a backward that keeps the fast memory layout.

    Autograd's own backward of ``x @ w.mT`` forms ∂W as (xᵀ g)ᵀ, a batched product whose output layout is several
    times slower on the CPU for the tall, thin shapes of these units (in = 100, out = 2) than computing gᵀ x
    directly; the backward pass of the whole network was dominated by it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return matmul(x, w.transpose(-1, -2))

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        grad_x = matmul(g, w) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            if x.dim() == 1:
                grad_w = g.unsqueeze(-1) * x  # outer product (out, in)
            else:
                grad_w = matmul(g.transpose(-1, -2), x)  # (*S, out, B) @ (*S, B, in)
            if grad_w.dim() > w.dim():  # x had more batch dimensions than w: sum them out
                grad_w = grad_w.sum(dim=tuple(range(grad_w.dim() - w.dim())))
        return grad_x, grad_w


def linear(x: Tensor, w: Tensor) -> Tensor:
    """y = x Wᵀ without bias: the NAC+ and NAU. (*S, B, in), (*S, out, in) -> (*S, B, out)."""
    if w.dim() == 2:  # one model: torch's own kernel is the fast one
        return torch.nn.functional.linear(x, w)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _Linear.apply(x, w)
    return matmul(x, w.transpose(-1, -2))


def log_magnitude(x: Tensor, eps: float, floor: bool = False) -> Tensor:
    """log(|x| + ε), or log(max(|x|, ε)) with ``floor``.

    When no gradient is needed for ``x`` (the network's input) it is computed by numpy in one buffer: its
    vectorised log was three times faster than torch's on our CPU, and in a seed-batched NALU this log of the
    whole (S, B, in) input was the largest cost of a step (benchmarks/README.md).
    """
    if _numpy_ok(x) and not (torch.is_grad_enabled() and x.requires_grad):
        a = np.abs(x.detach().numpy())
        (np.maximum if floor else np.add)(a, eps, out=a)
        return torch.from_numpy(np.log(a, out=a))
    a = x.abs()
    return torch.log(a.clamp_min(eps) if floor else a + eps)


def nac_mul(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """NAC•, the log-space NAC: y = exp(log(|x| + ε) Wᵀ) (Trask et al. 2018, eq. 2-3). Drops the sign of x."""
    return torch.exp(linear(log_magnitude(x, eps), w))


def gated_mix(g: Tensor, a: Tensor, m: Tensor) -> Tensor:
    """y = g ⊙ a + (1 − g) ⊙ m, the NALU's gate between its additive and multiplicative paths."""
    return g * a + (1 - g) * m


def nalu(x: Tensor, w_add: Tensor, w_mul: Tensor, g: Tensor, eps: float) -> Tensor:
    """NALU (Trask et al. 2018, eq. 2-5): a = x W_aᵀ, m = exp(log(|x| + ε) W_mᵀ), y = g ⊙ a + (1 − g) ⊙ m.

    ``g`` is the gate after the sigmoid, broadcastable to the output. The paper ties W_a = W_m.
    """
    return gated_mix(g, linear(x, w_add), nac_mul(x, w_mul, eps))


def nmu(x: Tensor, w: Tensor) -> Tensor:
    """NMU (Madsen & Johansen 2020, eq. 9): y_j = ∏_i (W_ji x_i + 1 − W_ji).

    (*S, B, in), (*S, out, in) -> (*S, B, out). W_ji = 1 selects x_i, W_ji = 0 contributes the neutral factor 1.
    """
    w = w.unsqueeze(-3)  # (*S, 1, out, in)
    return (w * x.unsqueeze(-2) + 1 - w).prod(dim=-1)  # (*S, B, out, in) -> (*S, B, out)


def inalu(x: Tensor, w_add: Tensor, w_mul: Tensor, g: Tensor, eps: float, omega: float) -> Tensor:
    """iNALU (Schlör, Ring & Hotho 2020, eq. 6-10).

    a = x W_aᵀ; m = exp(min(log(max(|x|, ε)) W_mᵀ, ω)); the sign s_j = ∏_i (sign(x_i)|W_m,ji| + 1 − |W_m,ji|)
    restores the sign the log path drops; y = g ⊙ a + (1 − g) ⊙ m ⊙ s.
    """
    m = torch.exp(linear(log_magnitude(x, eps, floor=True), w_mul).clamp_max(omega))
    s = nmu(torch.sign(x), w_mul.abs())
    return gated_mix(g, linear(x, w_add), m * s)


def npu(x: Tensor, w_real: Tensor, w_imag: Tensor | None, gate: Tensor, eps: float) -> Tensor:
    """Neural Power Unit (Heim, Pevný & Šmídl 2020, eq. 5-7); RealNPU when ``w_imag`` is None.

    ĝ = clamp(gate, 0, 1) (shape (*S, 1, in)); r = ĝ ⊙ |x| + (1 − ĝ); k = π ĝ ⊙ [x < 0];
    y = exp(log(r) W_rᵀ − k W_iᵀ) ⊙ cos(log(r) W_iᵀ + k W_rᵀ).
    The complex logarithm of a negative input is log|x| + iπ, so products, quotients and powers of negative
    numbers keep their sign. ``r`` is floored at ε so that log(0) is never taken.
    """
    g = gate.clamp(0, 1)  # (*S, 1, in), broadcast over the batch
    log_r = torch.log((g * x.abs() + 1 - g).clamp_min(eps))
    k = math.pi * g * (x < 0).to(x.dtype)
    magnitude = linear(log_r, w_real)
    phase = linear(k, w_real)
    if w_imag is not None:
        magnitude = magnitude - linear(k, w_imag)
        phase = phase + linear(log_r, w_imag)
    return torch.exp(magnitude) * torch.cos(phase)


def nru(x: Tensor, w: Tensor, sharpness: float | None = None) -> Tensor:
    """Neural Reciprocal Unit (Mistry, Farrahi & Hare 2021, "Learning Division with Neural Arithmetic Logic Modules"):
    y_j = ∏_i (sign(x_i) |x_i|^W_ji · A_ji + 1 − A_ji), with A = |W|.

    (*S, B, in), (*S, out, in) -> (*S, B, out). W_ji = 1 selects x_i, −1 its reciprocal, 0 the neutral factor 1.
    With ``sharpness`` k the authors' smooth |W| ≈ tanh(k W)² replaces |W| (they train with k = 1000), so that
    the gradient at W = 0 is defined.
    """
    a = torch.tanh(sharpness * w).square() if sharpness else w.abs()
    a, w, x = a.unsqueeze(-3), w.unsqueeze(-3), x.unsqueeze(-2)  # (*S, 1, out, in) and (*S, B, 1, in)
    factors = torch.sign(x) * x.abs().pow(w) * a + 1 - a  # (*S, B, out, in)
    # A product of the in slices, not torch.prod: prod's backward takes another path for the whole tensor as soon
    # as one factor anywhere is 0 (0^W = 0 or ∞^−W = 0 here), which would change other seeds' gradients by an ulp.
    return cast(Tensor, math.prod(factors.unbind(dim=-1)))


def nmru(x: Tensor, w: Tensor, eps: float = 0.0, sign_retrieval: bool = False) -> Tensor:
    """Neural Multiplication-Reciprocal Unit (Mistry et al. 2021): an NMU over [x, 1 / (x + ε)].

    (*S, B, in), (*S, out, 2·in) -> (*S, B, out); W_j = [1, 0 | 0, 1] gives x_1 / x_2. With ``sign_retrieval``
    the NMU sees the magnitudes |[x, 1/(x + ε)]| and the sign comes back as cos(π k Wᵀ), k = [x < 0] (the RealNPU's
    sign, the authors' "NMRU with sign retrieval").
    """
    x = torch.cat([x, (x + eps).reciprocal()], dim=-1)  # (*S, B, 2·in)
    if not sign_retrieval:
        return nmu(x, w)
    k = math.pi * (x < 0).to(x.dtype)
    return nmu(x.abs(), w) * torch.cos(linear(k, w))


def snmu(x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
    """Stochastic NMU (Mistry, Farrahi & Hare 2022, arXiv 2211.05624): y = NMU_W(x ⊙ n) / NMU_W(n).

    ``noise`` n has x's shape (*S, B, in) and is positive: every factor W n + 1 − W of the divisor is then ≥ 1
    (W ∈ [0, 1], n ≥ 1), and for W ∈ {0, 1} the noise cancels exactly.
    """
    return nmu(x * noise, w) / nmu(noise, w)


def mcfc(x: Tensor, r: Tensor, gate: Tensor) -> Tensor:
    """Mass-conserving fully connected layer (Hoedt et al. 2021, "MC-LSTM"): y = o ⊙ (x Mᵀ).

    M = softmax over the outputs of the logits ``r`` (*S, out, in): each input's mass is split over the outputs
    (every column of M sums to 1); o = σ(``gate``) (*S, 1, out) is the output gate, the share of the mass let out.
    """
    return torch.sigmoid(gate) * linear(x, torch.softmax(r, dim=-2))


def mcfc_mul(x: Tensor, r: Tensor, gate: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The MCFC in log space (Hoedt et al. 2021's multiplicative form as run by Mistry et al.):
    y = exp(mcfc(log(|x| + ε)) + b). Drops the sign of x, as the NAC• does."""
    return torch.exp(mcfc(log_magnitude(x, eps), r, gate) + bias)


_GOLDEN64 = np.uint64(0x9E3779B97F4A7C15)


def splitmix_uniform(keys: Tensor, counters: Tensor, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    """Counter-based U[low, high) noise, one independent stream per seed: (*S,) int64 keys and counters ->
    (*S, *shape) float64 on the CPU.

    Element e of draw c of seed s is the SplitMix64 output (Steele, Lea & Flood 2014) of state key_s + (c·2³² + e)·γ,
    so a draw depends only on that seed's key and counter (no generator state to carry, checkpoint or share)
    and all seeds are drawn in one vectorised pass.
    """
    n = math.prod(shape)
    k = keys.detach().cpu().numpy().astype(np.uint64)[..., None]
    c = counters.detach().cpu().numpy().astype(np.uint64)[..., None]
    with np.errstate(over="ignore"):  # the arithmetic is modulo 2⁶⁴ by design
        z: np.ndarray = k + ((c << np.uint64(32)) + np.arange(n, dtype=np.uint64)) * _GOLDEN64  # uint64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1) with 53 bits
    return torch.from_numpy(low + (high - low) * u).reshape(tuple(keys.shape) + tuple(shape))


def _mean_last2(t: Tensor) -> Tensor:
    return t.mean(dim=(-2, -1))


def nau_sparsity(w: Tensor) -> Tensor:
    """NAU regulariser (Madsen & Johansen 2020, eq. 7): mean(min(|W|, 1 − |W|)), one value per seed."""
    a = w.abs()
    return _mean_last2(torch.minimum(a, 1 - a))


def nmu_sparsity(w: Tensor) -> Tensor:
    """NMU regulariser (Madsen & Johansen 2020, eq. 10): mean(min(W, 1 − W)), one value per seed."""
    return _mean_last2(torch.minimum(w, 1 - w))


def inalu_sparsity(params: Sequence[Tensor], threshold: float, reduction: str = "sum") -> Tensor:
    """iNALU regulariser (Schlör et al. 2020, eq. 11): Σ_p mean(max(t − |p|, 0)) / t over its raw parameters
    (their code: 0.05 · Σ_p mean(max(20 − |p|, 0)), t = 20); ``reduction="mean"`` divides by the number of
    parameters as well.

    It pushes Ŵ, M̂ and the gate away from 0, where tanh and σ are least decisive. Every parameter has at least
    two trailing dimensions (the gate is stored as (*S, 1, out)).
    """
    total = sum(_mean_last2((threshold - p.abs()).clamp_min(0) / threshold) for p in params)
    total = cast(Tensor, total)
    return total / len(params) if reduction == "mean" else total


def sparsity_error(w: Tensor) -> Tensor:
    """Sparsity error of Madsen & Johansen (2020, eq. 19): max_ij min(|W_ij|, |1 − |W_ij||), one per seed."""
    a = w.abs()
    return torch.minimum(a, (1 - a).abs()).amax(dim=(-2, -1))
