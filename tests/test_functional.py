"""nalm.functional: float64 gradchecks of every core, known values, and broadcasting over the seed axis.

Inputs are kept away from the points where a core is not differentiable: |x| away from 0 (abs, sign, log),
clamp boundaries (the NPU gate, the iNALU's ε floor and ω cap) and ties of min (the regularisers).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from nalm import functional as F

F64 = torch.float64


def uniform(*shape, low, high, seed=0, signed=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.empty(shape, dtype=F64).uniform_(low, high, generator=g)
    if signed:
        t = t * (torch.randint(0, 2, shape, generator=g).to(F64) * 2 - 1)
    return t.requires_grad_()


def check(fn, *inputs):
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# -- gradchecks ----------------------------------------------------------------------------------------------------
def test_gradcheck_nac_weight():
    check(F.nac_weight, uniform(2, 3, low=-2, high=2, seed=1), uniform(2, 3, low=-2, high=2, seed=2))


@pytest.mark.parametrize("seed_shape", [(), (2,)])
def test_gradcheck_linear(seed_shape):
    check(F.linear, uniform(*seed_shape, 4, 3, low=-2, high=2, seed=1), uniform(*seed_shape, 2, 3, low=-1, high=1))


@pytest.mark.parametrize("seed_shape", [(), (2,)])
def test_gradcheck_nac_mul(seed_shape):
    x = uniform(*seed_shape, 4, 3, low=0.5, high=2, signed=True, seed=1)
    w = uniform(*seed_shape, 2, 3, low=-1, high=1)
    check(lambda x, w: F.nac_mul(x, w, 1e-7), x, w)


def test_gradcheck_nalu():
    x = uniform(4, 3, low=0.5, high=2, signed=True, seed=1)
    w_add = uniform(2, 3, low=-1, high=1, seed=2)
    w_mul = uniform(2, 3, low=-1, high=1, seed=3)
    g = uniform(4, 2, low=0.1, high=0.9, seed=4)
    check(lambda x, wa, wm, g: F.nalu(x, wa, wm, g, 1e-7), x, w_add, w_mul, g)


def test_gradcheck_gated_mix():
    check(F.gated_mix, uniform(4, 2, low=0.1, high=0.9), uniform(4, 2, low=-2, high=2, seed=1),
          uniform(4, 2, low=-2, high=2, seed=2))


@pytest.mark.parametrize("seed_shape", [(), (2,)])
def test_gradcheck_nmu(seed_shape):
    x = uniform(*seed_shape, 4, 3, low=-2, high=2, seed=1)
    w = uniform(*seed_shape, 2, 3, low=0.05, high=0.95, seed=2)
    check(F.nmu, x, w)


def test_gradcheck_inalu():
    x = uniform(4, 3, low=0.5, high=2, signed=True, seed=1)  # |x| > ε, and log|x|·W far below ω = 20
    w_add = uniform(2, 3, low=-1, high=1, seed=2)
    w_mul = uniform(2, 3, low=0.2, high=0.9, signed=True, seed=3)  # |W_m| away from 0
    g = uniform(1, 2, low=0.1, high=0.9, seed=4)
    check(lambda x, wa, wm, g: F.inalu(x, wa, wm, g, 1e-7, 20.0), x, w_add, w_mul, g)


def test_gradcheck_inalu_at_the_omega_cap():
    """Above the cap exp(ω) is constant in x and W_m, but the sign and the additive path still have gradients."""
    x = uniform(4, 2, low=5e4, high=1e5, signed=True, seed=1)
    w_mul = uniform(1, 2, low=0.9, high=0.99, seed=3)
    out = F.inalu(x, torch.zeros(1, 2, dtype=F64), w_mul, torch.full((1, 1), 1e-3, dtype=F64), 1e-7, 20.0)
    sign = F.nmu(torch.sign(x.detach()), w_mul.detach().abs())  # the relaxed sign, not ±1 while |W_m| < 1
    torch.testing.assert_close(out, (1 - 1e-3) * math.exp(20.0) * sign, rtol=1e-12, atol=0)
    check(lambda wm: F.inalu(x.detach(), torch.zeros(1, 2, dtype=F64), wm, torch.full((1, 1), 0.5, dtype=F64),
                             1e-7, 20.0), w_mul)


@pytest.mark.parametrize("imaginary", [True, False])
@pytest.mark.parametrize("seed_shape", [(), (2,)])
def test_gradcheck_npu(imaginary, seed_shape):
    x = uniform(*seed_shape, 4, 3, low=0.5, high=2, signed=True, seed=1)
    w_real = uniform(*seed_shape, 2, 3, low=-1, high=1, seed=2)
    gate = uniform(*seed_shape, 1, 3, low=0.1, high=0.9, seed=4)  # inside the clamp to [0, 1]
    if imaginary:
        w_imag = uniform(*seed_shape, 2, 3, low=-0.5, high=0.5, seed=3)
        check(lambda x, wr, wi, g: F.npu(x, wr, wi, g, 1e-7), x, w_real, w_imag, gate)
    else:
        check(lambda x, wr, g: F.npu(x, wr, None, g, 1e-7), x, w_real, gate)


def test_gradcheck_nau_sparsity():
    # |W| away from 0 (abs) and from 0.5 (the min tie)
    w = uniform(2, 2, 3, low=0.05, high=0.4, signed=True, seed=1)
    with torch.no_grad():
        w[:, 0] = w[:, 0].sign() * (1 - w[:, 0].abs())  # some entries in (0.6, 0.95), the other branch of min
    check(F.nau_sparsity, w)


def test_gradcheck_nmu_sparsity():
    w = uniform(2, 2, 3, low=0.05, high=0.4, seed=1)
    with torch.no_grad():
        w[:, 0] = 1 - w[:, 0]
    check(F.nmu_sparsity, w)


def test_gradcheck_inalu_sparsity():
    # |p| away from 0 and from the threshold t: some inside (the penalised region), some beyond it
    p1 = uniform(2, 3, low=0.5, high=1.5, signed=True, seed=1)
    p2 = uniform(1, 3, low=2.5, high=4.0, signed=True, seed=2)
    check(lambda a, b: F.inalu_sparsity([a, b], 2.0), p1, p2)


@pytest.mark.parametrize("sharpness", [None, 3.0])
@pytest.mark.parametrize("seed_shape", [(), (2,)])
def test_gradcheck_nru(sharpness, seed_shape):
    x = uniform(*seed_shape, 4, 3, low=0.5, high=2, signed=True, seed=1)
    w = uniform(*seed_shape, 2, 3, low=0.1, high=0.9, signed=True, seed=2)  # |W| away from 0, where abs has a kink
    check(lambda x, w: F.nru(x, w, sharpness), x, w)


@pytest.mark.parametrize("sign_retrieval", [False, True])
def test_gradcheck_nmru(sign_retrieval):
    x = uniform(4, 3, low=0.5, high=2, signed=True, seed=1)
    w = uniform(2, 6, low=0.05, high=0.95, seed=2)
    check(lambda x, w: F.nmru(x, w, 1e-7, sign_retrieval), x, w)


def test_gradcheck_snmu():
    x = uniform(4, 3, low=-2, high=2, seed=1)
    w = uniform(2, 3, low=0.05, high=0.95, seed=2)
    noise = uniform(4, 3, low=1, high=5, seed=3)
    check(F.snmu, x, w, noise)


def test_gradcheck_mcfc():
    x = uniform(4, 3, low=-2, high=2, seed=1)
    r = uniform(2, 3, low=-1, high=1, seed=2)
    gate = uniform(1, 2, low=-1, high=1, seed=3)
    check(F.mcfc, x, r, gate)
    bias = uniform(1, 2, low=-0.5, high=0.5, seed=4)
    xs = uniform(4, 3, low=0.5, high=2, signed=True, seed=5)
    check(lambda x, r, g, b: F.mcfc_mul(x, r, g, b, 1e-7), xs, r, gate, bias)


def test_gradcheck_golden_nac_weight():
    check(lambda w, m: F.nac_weight(w, m, math.log((1 + math.sqrt(5)) / 2)), uniform(2, 3, low=-2, high=2, seed=1),
          uniform(2, 3, low=-2, high=2, seed=2))


# -- known values ----------------------------------------------------------------------------------------------------
def test_nac_weight_values():
    w_hat = torch.tensor([[40.0, -40.0, 0.0, 0.3]], dtype=F64)
    m_hat = torch.tensor([[40.0, 40.0, 40.0, -0.2]], dtype=F64)
    w = F.nac_weight(w_hat, m_hat)
    assert w[0, :3].tolist() == [1.0, -1.0, 0.0]
    assert w[0, 3].item() == pytest.approx(math.tanh(0.3) / (1 + math.exp(0.2)), rel=1e-15)
    many = F.nac_weight(torch.randn(100, 100, dtype=F64) * 10, torch.randn(100, 100, dtype=F64) * 10)
    assert many.abs().max() <= 1


def test_linear_and_nmu_values():
    x = torch.tensor([[2.0, 3.0, 5.0]], dtype=F64)
    w = torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0]], dtype=F64)
    assert F.linear(x, w).tolist() == [[5.0, 4.0]]
    w_nmu = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.5, 0.0, 0.0]], dtype=F64)
    assert F.nmu(x, w_nmu).tolist() == [[6.0, 10.0, 1.5]]


def test_npu_values():
    x = torch.tensor([[-2.0, 4.0]], dtype=F64)
    gate = torch.ones(1, 2, dtype=F64)
    w = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.5], [1.0, -1.0]], dtype=F64)
    y = F.npu(x, w, None, gate, 1e-7)
    torch.testing.assert_close(y, torch.tensor([[-8.0, 4.0, 2.0, -0.5]], dtype=F64), rtol=1e-14, atol=1e-14)
    # A gate above 1 or below 0 acts as 1 or 0 (it is clamped).
    torch.testing.assert_close(F.npu(x, w, None, torch.tensor([[3.0, -1.0]], dtype=F64), 1e-7),
                               F.npu(x, w, None, torch.tensor([[1.0, 0.0]], dtype=F64), 1e-7), rtol=0, atol=0)
    # x = 0 with the gate open: r is floored at ε, never log(0).
    y0 = F.npu(torch.zeros(1, 2, dtype=F64), w, None, gate, 1e-7)
    assert torch.isfinite(y0).all()


def test_nac_mul_and_nalu_values():
    x = torch.tensor([[2.0, 8.0]], dtype=F64)
    w = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64)
    torch.testing.assert_close(F.nac_mul(x, w, 0.0), torch.tensor([[16.0, 0.25]], dtype=F64), rtol=1e-14, atol=0)
    g = torch.tensor([[0.25, 1.0]], dtype=F64)
    torch.testing.assert_close(F.nalu(x, w, w, g, 0.0), torch.tensor([[0.25 * 10 + 0.75 * 16, -6.0]], dtype=F64),
                               rtol=1e-14, atol=0)
    assert torch.isfinite(F.nac_mul(torch.zeros(1, 2, dtype=F64), w, 1e-7)).all()  # log(0 + ε)


def test_inalu_values():
    x = torch.tensor([[-2.0, 8.0], [0.0, 3.0]], dtype=F64)
    w = torch.tensor([[1.0, 1.0]], dtype=F64)
    g = torch.zeros(1, 1, dtype=F64)
    y = F.inalu(x, w, w, g, 1e-7, 20.0)
    assert y[0, 0].item() == pytest.approx(-16.0, rel=1e-14)
    assert y[1, 0].item() == pytest.approx(0.0, abs=1e-6)  # max(|0|, ε) = ε, and sign(0) = 0 anyway


def test_regularisers_values():
    w = torch.tensor([[0.0, 1.0, -1.0, 0.5], [-0.25, 0.75, 0.1, -0.9]], dtype=F64)
    assert F.nau_sparsity(w).item() == pytest.approx((0.5 + 0.25 + 0.25 + 0.1 + 0.1) / 8, rel=1e-14)
    w01 = torch.tensor([[0.0, 1.0, 0.5, 0.2]], dtype=F64)
    assert F.nmu_sparsity(w01).item() == pytest.approx(0.7 / 4, rel=1e-14)
    params = [torch.tensor([[0.0, 20.0, -30.0, 10.0]], dtype=F64), torch.tensor([[-5.0, 25.0]], dtype=F64)]
    # the authors' sum over the parameters, and nalm's earlier mean over them
    assert F.inalu_sparsity(params, 20.0).item() == pytest.approx((1 + 0 + 0 + 0.5) / 4 + (0.75 + 0) / 2)
    assert F.inalu_sparsity(params, 20.0, "mean").item() == pytest.approx(((1 + 0 + 0 + 0.5) / 4 + 0.75 / 2) / 2)
    assert F.sparsity_error(w).item() == pytest.approx(0.5)
    assert F.sparsity_error(torch.tensor([[1.0, -1.0, 0.0]], dtype=F64)).item() == 0.0
    stacked = torch.stack([w, -w, w * 0])
    expected = torch.stack([F.nau_sparsity(w), F.nau_sparsity(w), torch.tensor(0.0, dtype=F64)])
    torch.testing.assert_close(F.nau_sparsity(stacked), expected)
    assert F.sparsity_error(stacked).shape == (3,)


# -- the seed axis: S stacked models equal S separate calls ---------------------------------------------------------
@pytest.mark.parametrize("core", ["linear", "nac_mul", "nalu", "nmu", "inalu", "npu", "nru", "nmru", "snmu", "mcfc",
                                  "mcfc_mul"])
def test_cores_broadcast_over_seeds(core):
    S = 3
    x = uniform(S, 5, 4, low=0.5, high=2, signed=True, seed=1).detach()
    w = uniform(S, 2, 4, low=0.1, high=0.9, seed=2).detach()
    w2 = uniform(S, 2, 4, low=-0.9, high=0.9, seed=3).detach()
    g = uniform(S, 1, 2, low=0.1, high=0.9, seed=4).detach()
    gate = uniform(S, 1, 4, low=0.1, high=0.9, seed=5).detach()
    fns = {
        "linear": lambda i: F.linear(x[i], w[i]),
        "nac_mul": lambda i: F.nac_mul(x[i], w2[i], 1e-7),
        "nalu": lambda i: F.nalu(x[i], w[i], w2[i], g[i], 1e-7),
        "nmu": lambda i: F.nmu(x[i], w[i]),
        "inalu": lambda i: F.inalu(x[i], w[i], w2[i], g[i], 1e-7, 20.0),
        "npu": lambda i: F.npu(x[i], w[i], w2[i], gate[i], 1e-7),
        "nru": lambda i: F.nru(x[i], w2[i], 3.0),
        "nmru": lambda i: F.nmru(x[i], torch.cat([w[i], w[i].flip(-1)], -1), 1e-7, True),
        "snmu": lambda i: F.snmu(x[i], w[i], x[i].abs() + 1),
        "mcfc": lambda i: F.mcfc(x[i], w2[i], g[i]),
        "mcfc_mul": lambda i: F.mcfc_mul(x[i], w2[i], g[i], g[i], 1e-7),
    }
    stacked = fns[core](slice(None))
    assert stacked.shape == (S, 5, 2)
    for i in range(S):
        torch.testing.assert_close(stacked[i], fns[core](i), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("floor", [False, True])
def test_log_magnitude_numpy_and_torch_paths_agree(floor):
    x = torch.tensor([[-2.0, -1e-9, 0.0, 1e-9, 3.0]], dtype=F64)
    expected = torch.log(x.abs().clamp_min(1e-7) if floor else x.abs() + 1e-7)
    fast = F.log_magnitude(x, 1e-7, floor=floor)  # no gradient needed: the numpy path
    assert torch.equal(x, torch.tensor([[-2.0, -1e-9, 0.0, 1e-9, 3.0]], dtype=F64))  # input untouched
    torch.testing.assert_close(fast, expected, rtol=1e-15, atol=0)
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(F.log_magnitude(xg, 1e-7, floor=floor), expected, rtol=1e-15, atol=0)
    assert torch.autograd.gradcheck(lambda t: F.log_magnitude(t, 1e-7, floor=floor),
                                    (torch.tensor([[-2.0, 0.5, 3.0]], dtype=F64, requires_grad=True),))
