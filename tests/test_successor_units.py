"""The units of issue 22 (gnalu, nru, nmru, snmu, mcfc) and the iNALU's authors' defaults: each forward pass
against values worked out by hand from its paper's equation, sign cases and zeros included.

The registry-parametrised checks (shapes, stacked = single, gradients, errors) run on these units in test_units.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import nalm
from nalm import functional as F

F64 = torch.float64
PHI = (1 + math.sqrt(5)) / 2


def unit(name: str, in_features: int, out_features: int, **options):
    return nalm.get_unit(name, in_features, out_features, dtype=F64, **options)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def setp(param: torch.nn.Parameter, rows) -> None:
    with torch.no_grad():
        param.copy_(t(rows))


# -- G-NALU --------------------------------------------------------------------------------------------------------
def test_gnalu_by_hand():
    """φ as the base of tanh, σ and exp/log, written out with powers of φ (not through ln φ)."""
    g = unit("gnalu", 2, 1, gate="independent")
    setp(g.W_hat, [[1.0, -2.0]])
    setp(g.M_hat, [[0.5, 3.0]])
    setp(g.g_hat, [[0.3]])

    def tanh_phi(v):
        return (PHI ** (2 * v) - 1) / (PHI ** (2 * v) + 1)

    def sigma_phi(v):
        return 1 / (1 + PHI ** -v)

    w = [tanh_phi(1.0) * sigma_phi(0.5), tanh_phi(-2.0) * sigma_phi(3.0)]
    gate = sigma_phi(0.3)
    x = [[-3.0, 0.5], [2.0, 4.0], [0.0, 1.5]]
    expected = []
    for x1, x2 in x:
        a = w[0] * x1 + w[1] * x2
        log_phi = [math.log(abs(v) + 1e-7) / math.log(PHI) for v in (x1, x2)]
        m = PHI ** (w[0] * log_phi[0] + w[1] * log_phi[1])  # the sign of x is lost, as in the NALU
        expected.append([gate * a + (1 - gate) * m])
    torch.testing.assert_close(g(t(x)), t(expected), rtol=1e-12, atol=0)
    # With the same raw parameters the NALU (base e) gives other numbers: the base matters.
    n = unit("nalu", 2, 1, gate="independent")
    n.load_state_dict(g.state_dict())
    assert not torch.allclose(n(t(x)), g(t(x)))


def test_gnalu_input_gate_uses_phi():
    g = unit("gnalu", 2, 1)
    setp(g.G, [[0.4, -0.1]])
    setp(g.W_hat, [[40.0, 40.0]])  # W = [1, 1] (tanh_φ(40)·σ_φ(40) rounds to 1 in float64)
    setp(g.M_hat, [[40.0, 40.0]])
    x = t([[2.0, 3.0]])
    gate = 1 / (1 + PHI ** -(0.4 * 2 - 0.1 * 3))
    torch.testing.assert_close(g(x), t([[gate * 5 + (1 - gate) * 6]]), rtol=1e-6, atol=0)  # ε in the log


# -- NRU -----------------------------------------------------------------------------------------------------------
def test_nru_by_hand_exact_abs():
    """Eval mode: the exact |W| of z = ∏ (sign(x)|x|^W|W| + 1 − |W|)."""
    u = unit("nru", 2, 3).eval()
    setp(u.weight, [[1.0, -1.0], [0.5, 0.0], [-0.5, 1.0]])
    x = t([[-3.0, 2.0], [6.0, -4.0], [0.0, 2.0], [-4.0, 0.0]])
    expected = [
        [-3.0 / 2.0, -math.sqrt(3) * 0.5 + 0.5, (-(3 ** -0.5) * 0.5 + 0.5) * 2.0],
        [6.0 / -4.0, math.sqrt(6) * 0.5 + 0.5, ((6 ** -0.5) * 0.5 + 0.5) * -4.0],
        [0.0, 0.5, math.nan],  # 0 · ½ = 0 and 0^0 = 1 (sign(0) = 0 leaves 1 − |W|); 0^−½ is undefined
        [math.nan, -2.0 * 0.5 + 0.5, 0.25 * 0.0],  # −4 / 0 is undefined; −4^−½ and 0^1 are not
    ]
    torch.testing.assert_close(u(x), t(expected), rtol=1e-14, atol=0, equal_nan=True)


def test_nru_trains_with_the_smooth_abs():
    u = unit("nru", 2, 1, sharpness=1000.0)
    setp(u.weight, [[0.001, -1.0]])
    x = t([[-3.0, 2.0]])
    a = math.tanh(1.0) ** 2  # tanh(1000 · 0.001)²
    smooth = (-(3 ** 0.001) * a + 1 - a) * (0.5 * math.tanh(1000.0) ** 2 + 1 - math.tanh(1000.0) ** 2)
    torch.testing.assert_close(u(x), t([[smooth]]), rtol=1e-14, atol=0)  # training mode (the default)
    exact = (-(3 ** 0.001) * 0.001 + 1 - 0.001) * 0.5
    torch.testing.assert_close(u.eval()(x), t([[exact]]), rtol=1e-14, atol=0)
    assert abs(smooth - exact) > 0.1


def test_nru_constraint_init_and_regulariser():
    u = unit("nru", 3, 2)
    r = min(0.5, math.sqrt(6 / 5))
    assert u.weight.abs().max() <= r
    setp(u.weight, [[2.0, -3.0, 0.25], [0.5, -0.9, 0.0]])
    u.post_step()
    assert u.weight.tolist() == [[1.0, -1.0, 0.25], [0.5, -0.9, 0.0]]
    assert u.regularization_loss().item() == pytest.approx((0 + 0 + 0.25 + 0.5 + 0.1 + 0) / 6)


# -- NMRU ----------------------------------------------------------------------------------------------------------
def test_nmru_by_hand():
    u = unit("nmru", 2, 3).eval()  # ε = 0 in eval mode
    setp(u.weight_x, [[1.0, 0.0], [0.5, 0.0], [1.0, 1.0]])
    setp(u.weight_r, [[0.0, 1.0], [0.0, 0.25], [0.0, 0.0]])
    assert u.weight.shape == (3, 4)
    x = t([[-6.0, 3.0], [6.0, -3.0], [-0.5, -2.0]])
    expected = []
    for x1, x2 in x.tolist():
        expected.append([x1 / x2, (0.5 * x1 + 0.5) * (0.25 / x2 + 0.75), x1 * x2])
    torch.testing.assert_close(u(x), t(expected), rtol=1e-14, atol=0)
    # x = 0: in eval mode 1/0 = ∞ and 0 · ∞ is undefined even where W_r = 0 (the authors'); in training 1/(0 + ε)
    assert u(t([[0.0, 2.0]])).isnan().all()
    eps = torch.finfo(torch.float32).eps
    zero = [[0.0, 0.5 * (0.25 / (2 + eps) + 0.75), 0.0]]
    torch.testing.assert_close(u.train()(t([[0.0, 2.0]])), t(zero), rtol=1e-14, atol=0)


def test_nmru_trains_with_epsilon():
    u = unit("nmru", 2, 1)
    setp(u.weight_x, [[1.0, 0.0]])
    setp(u.weight_r, [[0.0, 1.0]])
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(u(t([[1.0, 1e-7]])), t([[1 / (1e-7 + eps)]]), rtol=1e-14, atol=0)
    assert u.eval()(t([[1.0, 0.0]])).item() == math.inf


def test_nmru_sign_retrieval_by_hand():
    u = unit("nmru", 2, 2, sign_retrieval=True).eval()
    setp(u.weight_x, [[1.0, 0.0], [0.5, 0.0]])
    setp(u.weight_r, [[0.0, 1.0], [0.0, 0.5]])
    x = t([[-6.0, 3.0], [-6.0, -3.0], [6.0, 3.0]])
    expected = []
    for x1, x2 in x.tolist():
        k1, k2 = float(x1 < 0), float(x2 < 0)  # 1/x has the sign of x
        exact = abs(x1) / abs(x2) * math.cos(math.pi * (k1 + k2))
        half = (0.5 * abs(x1) + 0.5) * (0.5 / abs(x2) + 0.5) * math.cos(math.pi * (0.5 * k1 + 0.5 * k2))
        expected.append([exact, half])
    torch.testing.assert_close(u(x), t(expected), rtol=1e-14, atol=1e-15)
    assert u(x)[:, 0].tolist() == pytest.approx([-2.0, 2.0, 2.0], rel=1e-14)


# -- sNMU ----------------------------------------------------------------------------------------------------------
def splitmix64(state: int, count: int) -> list[int]:
    """The reference SplitMix64 generator (Steele, Lea & Flood 2014), in plain Python integers."""
    out, mask = [], 2**64 - 1
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_splitmix_uniform_is_splitmix64():
    assert splitmix64(0, 1) == [0xE220A8397B1DCDAF]  # the published first output for seed 0
    key, step = 123456789, 7
    u = F.splitmix_uniform(torch.tensor([key]), torch.tensor([step]), (2, 3), 1.0, 5.0)
    assert u.shape == (1, 2, 3) and u.dtype == F64
    start = key + ((step << 32) - 1) * 0x9E3779B97F4A7C15  # element e is output e of the stream from this state
    ref = [1 + 4 * (z >> 11) * 2.0**-53 for z in splitmix64(start % 2**64, 6)]
    assert u.flatten().tolist() == ref


def test_snmu_by_hand():
    u = unit("snmu", 2, 1)
    setp(u.weight, [[0.5, 0.25]])
    x = t([[-3.0, 2.0], [0.0, -5.0]])
    n = F.splitmix_uniform(u.noise_key, u.noise_step, (2, 2), 1.0, 5.0)
    assert (n >= 1).all() and (n < 5).all()
    expected = []
    for (x1, x2), (n1, n2) in zip(x.tolist(), n.tolist()):
        num = (0.5 * x1 * n1 + 0.5) * (0.25 * x2 * n2 + 0.75)
        den = (0.5 * n1 + 0.5) * (0.25 * n2 + 0.75)
        expected.append([num / den])
    y = u(x)
    torch.testing.assert_close(y, t(expected), rtol=1e-14, atol=0)
    nmu = [[(0.5 * x1 + 0.5) * (0.25 * x2 + 0.75)] for x1, x2 in x.tolist()]
    assert not torch.allclose(y, t(nmu))  # the noise changes a non-discrete W's output...
    torch.testing.assert_close(u.eval()(x), t(nmu), rtol=1e-15, atol=0)  # ...and is off in eval mode
    u.train()
    setp(u.weight, [[1.0, 1.0]])  # a discrete W divides the noise out exactly
    torch.testing.assert_close(u(x), t([[-6.0], [-0.0]]), rtol=1e-14, atol=0)


def test_snmu_noise_moves_on_with_post_step_only():
    u = unit("snmu", 2, 1)
    x = t([[1.5, 2.5]])
    rng = torch.get_rng_state()
    y0, y0_again = u(x), u(x)
    assert torch.equal(y0, y0_again)  # the same step draws the same noise
    u.post_step()
    assert not torch.equal(u(x), y0)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is never touched
    v = unit("snmu", 2, 1)
    v.load_state_dict(u.state_dict())  # the noise key and step travel with the state (checkpoints resume them)
    assert torch.equal(v(x), u(x))


def test_snmu_noise_range_option():
    u = unit("snmu", 1, 1, noise_low=2.0, noise_high=2.5)
    n = F.splitmix_uniform(u.noise_key, u.noise_step, (1000, 1), 2.0, 2.5)
    assert n.min() >= 2.0 and n.max() < 2.5
    with pytest.raises(nalm.ConfigError, match="noise_low"):
        unit("snmu", 1, 1, noise_low=3.0, noise_high=2.0)


# -- MCFC ----------------------------------------------------------------------------------------------------------
def test_mcfc_by_hand():
    u = unit("mcfc", 2, 2)
    setp(u.R, [[0.0, math.log(3)], [math.log(3), 0.0]])  # M = [[1/4, 3/4], [3/4, 1/4]]: columns sum to 1
    setp(u.gate_weight, [[0.5, -0.5]])
    setp(u.gate_bias, [[0.5, 0.5]])  # o = σ([1, 0])
    torch.testing.assert_close(u.weight, t([[0.25, 0.75], [0.75, 0.25]]), rtol=1e-15, atol=0)
    x = t([[-2.0, 4.0], [0.0, 1.0]])
    s1 = 1 / (1 + math.exp(-1))
    expected = [[s1 * (0.25 * -2 + 0.75 * 4), 0.5 * (0.75 * -2 + 0.25 * 4)], [s1 * 0.75, 0.5 * 0.25]]
    torch.testing.assert_close(u(x), t(expected), rtol=1e-14, atol=0)
    setp(u.gate_bias, [[50.0, 50.0]])  # the gate open: the outputs' mass is the inputs' mass
    torch.testing.assert_close(u(x).sum(-1), x.sum(-1), rtol=1e-14, atol=0)


def test_mcfc_mul_by_hand():
    u = unit("mcfc", 2, 1, mode="mul")
    assert u.multiplicative and not unit("mcfc", 2, 1).multiplicative
    assert torch.equal(u.weight, t([[1.0, 1.0]]))  # one output: all the mass goes to it
    setp(u.gate_weight, [[0.0]])
    setp(u.gate_bias, [[50.0]])  # o = 1
    setp(u.bias, [[math.log(2)]])
    x = t([[2.0, 4.0], [-2.0, 4.0], [0.0, 3.0]])
    expected = [[2 * 8.0], [2 * 8.0], [2 * (1e-7) * (3 + 1e-7)]]  # the sign is dropped; log(|x| + ε)
    torch.testing.assert_close(u(x), t(expected), rtol=1e-6, atol=0)
    setp(u.gate_bias, [[0.0]])  # o = ½: the square root of the product
    torch.testing.assert_close(u(x[:1]), t([[2 * math.sqrt(8.0)]]), rtol=1e-6, atol=0)


def test_mcfc_init_and_regulariser():
    u = unit("mcfc", 3, 3)
    assert torch.equal(u.R, torch.eye(3, dtype=F64))  # in = out: the identity, as the authors'
    v = unit("mcfc", 3, 2)
    torch.testing.assert_close(v.R @ v.R.T, torch.eye(2, dtype=F64), rtol=0, atol=1e-12)  # orthogonal rows
    assert v.gate_weight.norm().item() == pytest.approx(1.0)
    assert v.gate_bias.abs().sum() == 0
    setp(v.R, [[1.0, -1.0, 2.0], [0.0, 0.0, 0.0]])
    setp(v.gate_weight, [[1.0, 3.0]])
    setp(v.gate_bias, [[2.0, 0.0]])
    assert v.regularization_loss().item() == pytest.approx(-(6 / 6 + 10 / 2 + 4 / 2))


# -- iNALU: the authors' defaults ----------------------------------------------------------------------------------
def test_inalu_authors_initialisation():
    u = unit("inalu", 300, 200)
    for name, (mean, std) in (("W_hat_add", (0.88, 0.2)), ("M_hat_add", (0.5, 0.2)), ("W_hat_mul", (0.88, 0.2)),
                              ("M_hat_mul", (0.5, 0.2))):
        p = getattr(u, name)
        assert p.mean().item() == pytest.approx(mean, abs=0.005), name
        assert p.std().item() == pytest.approx(std, abs=0.005), name
    gate = unit("inalu", 2, 20000).g_hat
    assert gate.mean().item() == pytest.approx(0.0, abs=0.01) and gate.std().item() == pytest.approx(0.2, abs=0.01)
    old = unit("inalu", 300, 200, init="glorot")
    assert old.g_hat.abs().sum() == 0
    assert old.W_hat_add.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)


def test_inalu_authors_regulariser():
    u = unit("inalu", 2, 1)
    with torch.no_grad():
        for p in u.parameters():
            p.fill_(5.0)  # each term: max(20 − 5, 0) / 20 = 0.75
    assert u.regularization_loss().item() == pytest.approx(5 * 0.75)  # summed over the 5 parameters
    old = unit("inalu", 2, 1, reg_reduction="mean")
    old.load_state_dict(u.state_dict())
    assert old.regularization_loss().item() == pytest.approx(0.75)
    with pytest.raises(nalm.ConfigError, match="init"):
        unit("inalu", 2, 1, init="xavier")


def test_inalu_reinitialises_stalled_seeds_only():
    """The authors' rule, per seed: a flat loss above 1 restarts the seed; a falling one or one below 1 does not."""
    u = nalm.get_unit("inalu", 2, 1, num_seeds=3, dtype=F64, reinit=True)
    u.reset_parameters([torch.Generator().manual_seed(10 + i) for i in range(3)])
    single = u.seed_module(0)
    before = {k: v.clone() for k, v in u.state_dict().items()}

    def losses(step):
        return t([5.0, 1e4 / step, 0.5])

    for step in range(1, 10_001):  # 10,000 losses: not yet more than 10,000
        u.observe_loss(losses(step))
        single.observe_loss(losses(step)[:1].reshape(()))
    assert all(torch.equal(v, u.state_dict()[k]) for k, v in before.items())
    for step in range(10_001, 10_011):  # the next check (10,010 losses) fires for seed 0 only
        u.observe_loss(losses(step))
        single.observe_loss(losses(step)[:1].reshape(()))
    assert u.reinit_count.tolist() == [1, 0, 0]
    for name, p in u.named_parameters():
        assert not torch.equal(p[0], before[name][0]), name
        assert torch.equal(p[1:], before[name][1:]), name
        assert torch.equal(getattr(single, name), p[0]), name  # the single copy restarts exactly as seed 0
    assert u.W_hat_add[0].mean().item() == pytest.approx(0.88, abs=0.5)  # drawn by the authors' rule again


def test_trainer_feeds_observers_and_clips_by_value():
    from nalm.engine.train import Hooks, TrainConfig, training_step

    class Observed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(t([[[3.0]], [[-2.0]]]))  # (S = 2, 1, 1)
            self.seen = []

        def forward(self, x):
            return x * self.w

        def regularization_loss(self):
            return t([100.0, 100.0])

        def observe_loss(self, loss):
            self.seen.append(loss)

    model = Observed()
    model.unit_name = "observed"
    hooks = Hooks.of(model, {"observed": {"scale": 1.0, "start": 0, "end": 0}})
    assert hooks.observers == [model]
    x, y = t([[[1.0]], [[1.0]]]), t([[[0.0]], [[0.0]]])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = training_step(model, opt, x, y, 1, hooks, torch.ones(2, dtype=torch.bool), grad_clip_value=0.1)
    torch.testing.assert_close(loss, t([109.0, 104.0]))  # the step's loss includes the regulariser...
    torch.testing.assert_close(model.seen[0], t([9.0, 4.0]))  # ...the observers see the task loss alone
    torch.testing.assert_close(model.w.detach().flatten(), t([2.9, -1.9]))  # gradients ±6, ∓4 clipped to ±0.1
    assert TrainConfig().stored() == TrainConfig(grad_clip_value=None).stored()  # stored keys unchanged
    assert TrainConfig(grad_clip_value=0.1).stored()["grad_clip_value"] == 0.1
    with pytest.raises(nalm.ConfigError, match="grad_clip_value"):
        TrainConfig(grad_clip_value=0.0)


def test_nalm_units_lists_the_new_units_with_their_options(capsys):
    from nalm.cli import main

    assert main(["units"]) == 0
    out = capsys.readouterr().out
    for name, option in (("gnalu", "gate="), ("nru", "sharpness=1000.0"), ("nmru", "sign_retrieval=False"),
                         ("snmu", "noise_high=5.0"), ("mcfc", "mode='add'"), ("inalu", "init='authors'")):
        line = next(i for i, text in enumerate(out.splitlines()) if text.startswith(f"{name} "))
        assert option in out.splitlines()[line + 1], name
