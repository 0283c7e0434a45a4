"""The unit modules: shapes, gradients, determinism, serialisation, errors, the seed axis, and exactness."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch

import nalm
from nalm.units import ArithmeticUnit, register_unit, unit_class

F64 = torch.float64
S = 4  # seeds of the stacked modules


# -- helpers -----------------------------------------------------------------------------------------------------
def signed_inputs(*shape: int, low: float = 0.5, high: float = 2.0, dtype=torch.float32, seed: int = 0):
    """Inputs of both signs with |x| in [low, high]: away from 0, where log-space units have no useful gradient."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.empty(shape, dtype=dtype).uniform_(low, high, generator=g)
    sign = torch.randint(0, 2, shape, generator=g).to(dtype) * 2 - 1
    return mag * sign


def positive_inputs(*shape: int, low: float, high: float, dtype=F64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.empty(shape, dtype=dtype).uniform_(low, high, generator=g)


def make(name: str, opts: dict, in_features: int = 3, out_features: int = 2, *, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return nalm.get_unit(name, in_features, out_features, **opts, **kwargs)


def params_of(unit) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unit.state_dict().items()}


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def rel_err(y: torch.Tensor, t: torch.Tensor) -> float:
    return ((y - t).abs() / t.abs()).max().item()


def set_nac(w_hat: torch.nn.Parameter, m_hat: torch.nn.Parameter, w: list) -> None:
    """Set Ŵ, M̂ so that tanh(Ŵ)·σ(M̂) equals ``w`` (entries in {-1, 0, 1}) exactly in float64."""
    target = torch.tensor(w, dtype=w_hat.dtype)
    with torch.no_grad():
        w_hat.copy_(40.0 * target)  # tanh(±40) == ±1.0 and tanh(0) == 0 exactly in float64
        m_hat.fill_(40.0)  # σ(40) == 1.0 exactly in float64


# -- forward and backward ----------------------------------------------------------------------------------------
def test_forward_backward_in_ne_out(variant):
    name, opts = variant
    unit = make(name, opts, 3, 2)
    x = signed_inputs(5, 3)
    y = unit(x)
    assert y.shape == (5, 2)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    params = dict(unit.named_parameters())
    assert params, "a unit without parameters cannot learn"
    for pname, p in params.items():
        assert p.grad is not None, pname
        assert p.grad.shape == p.shape, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} receives no gradient"


#: The nine interpolation ranges of the NALM Primer's single-module benchmark (Mistry, Farrahi & Hare 2022).
PRIMER_RANGES = [(-20, -10), (-2, -1), (-1.2, -1.1), (-0.2, -0.1), (-2, 2), (0.1, 0.2), (1, 2), (1.1, 1.2), (10, 20)]


@pytest.mark.parametrize("low, high", PRIMER_RANGES)
def test_gradients_finite_on_the_primer_ranges(variant, low, high):
    """A 2 → 1 unit at its initialisation, on a batch of each benchmark range: output and gradients finite."""
    name, opts = variant
    unit = make(name, opts, 2, 1, dtype=F64)
    x = positive_inputs(64, 2, low=low, high=high, seed=3)
    y = unit(x)
    assert torch.isfinite(y).all()
    (y - x.prod(-1, keepdim=True)).square().mean().backward()
    for pname, p in unit.named_parameters():
        assert torch.isfinite(p.grad).all(), pname


def test_weight_shapes_follow_nn_linear(variant):
    """Weights are (out, in), never (in, out): a swapped layout only works when in == out."""
    name, opts = variant
    unit = make(name, opts, 3, 2)
    for pname, p in unit.named_parameters():
        assert p.shape[-1] in (3, 2) and p.dim() == 2, pname
        if p.shape[0] != 1:  # gates and biases are (1, in) or (1, out)
            assert p.shape == (2, 3), pname


def test_leading_batch_dims(variant):
    name, opts = variant
    unit = make(name, opts, 3, 2, dtype=F64)
    x = signed_inputs(2, 5, 3, dtype=F64)
    y = unit(x)
    assert y.shape == (2, 5, 2)
    torch.testing.assert_close(y, unit(x.reshape(10, 3)).reshape(2, 5, 2), rtol=1e-14, atol=0)
    assert unit(x[0, 0]).shape == (2,)  # a single unbatched row
    torch.testing.assert_close(unit(x[0, 0]), y[0, 0], rtol=1e-14, atol=0)


# -- determinism and initialisation --------------------------------------------------------------------------------
def test_manual_seed_determinism(variant):
    name, opts = variant
    a, b, c = make(name, opts, seed=0), make(name, opts, seed=0), make(name, opts, seed=1)
    assert_state_equal(params_of(a), params_of(b))
    assert any(not torch.equal(v, params_of(c)[k]) for k, v in params_of(a).items()), "init ignores the seed"


def test_reset_parameters_generator(variant):
    name, opts = variant
    unit = make(name, opts)
    rng_before = torch.get_rng_state()
    unit.reset_parameters(generator=torch.Generator().manual_seed(0))
    first = params_of(unit)
    unit.reset_parameters(generator=torch.Generator().manual_seed(0))
    assert_state_equal(first, params_of(unit))
    assert torch.equal(rng_before, torch.get_rng_state()), "a seeded reset must not consume the global RNG"
    unit.reset_parameters(generator=torch.Generator().manual_seed(1))
    assert any(not torch.equal(v, params_of(unit)[k]) for k, v in first.items())


# -- serialisation -----------------------------------------------------------------------------------------------
def test_state_dict_round_trip(variant):
    name, opts = variant
    a, b = make(name, opts, seed=0), make(name, opts, seed=1)
    x = signed_inputs(6, 3)
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("num_seeds", [None, 3])
def test_torch_save_load_weights_only(variant, num_seeds, tmp_path):
    name, opts = variant
    a = make(name, opts, seed=0, num_seeds=num_seeds)
    x = signed_inputs(*((num_seeds,) if num_seeds else ()), 6, 3)
    path = tmp_path / "unit.pt"
    torch.save(a.state_dict(), path)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    for source in (path, buf):
        b = make(name, opts, seed=1, num_seeds=num_seeds)
        b.load_state_dict(torch.load(source, weights_only=True))
        assert torch.equal(a(x), b(x))


# -- input checks --------------------------------------------------------------------------------------------------
def test_wrong_shape_rejected(variant):
    name, opts = variant
    unit = make(name, opts, 7, 2)
    with pytest.raises(nalm.ShapeError) as e:
        unit(torch.randn(4, 5))
    msg = str(e.value)
    assert re.search(r"\b7\b", msg), msg  # the expected in_features
    assert "(4, 5)" in msg, msg  # the actual shape
    with pytest.raises(nalm.ShapeError):
        unit(torch.tensor(1.0))  # 0-d
    with pytest.raises(nalm.ShapeError):
        unit([[1.0] * 7])  # not a tensor


def test_wrong_shape_rejected_stacked(variant):
    name, opts = variant
    unit = make(name, opts, 3, 2, num_seeds=S)
    with pytest.raises(nalm.ShapeError) as e:
        unit(torch.randn(S + 1, 5, 3))  # wrong number of seeds
    assert "(5, 5, 3)" in str(e.value) and str(S) in str(e.value)
    with pytest.raises(nalm.ShapeError):
        unit(torch.randn(S, 5, 4))  # wrong in_features
    with pytest.raises(nalm.ShapeError):
        unit(torch.randn(3))  # no seed axis


def test_wrong_dtype_rejected(variant):
    name, opts = variant
    unit = make(name, opts, 3, 2)
    with pytest.raises(nalm.ShapeError) as e:
        unit(torch.randn(4, 3, dtype=F64))
    assert "float64" in str(e.value)
    unit64 = make(name, opts, 3, 2, dtype=F64)
    assert all(p.dtype == F64 for p in unit64.parameters())
    with pytest.raises(nalm.ShapeError):
        unit64(torch.randn(4, 3))


# -- the seed axis -------------------------------------------------------------------------------------------------
def test_stacked_equals_single_seed(variant):
    name, opts = variant
    stacked = make(name, opts, 3, 2, num_seeds=S, dtype=F64)
    x = signed_inputs(S, 6, 3, dtype=F64, seed=1)
    coef = signed_inputs(S, 6, 2, dtype=F64, seed=2)  # a loss that weighs every output differently
    y = stacked(x)
    assert y.shape == (S, 6, 2)
    (y * coef).sum().backward()
    for i in range(S):
        single = stacked.seed_module(i)
        assert single.num_seeds is None and type(single) is type(stacked)
        assert all(getattr(single, k) == getattr(stacked, k) for k in stacked.options)
        yi = single(x[i])
        torch.testing.assert_close(yi, y[i].detach(), rtol=1e-12, atol=1e-14)
        (yi * coef[i]).sum().backward()
        for (pname, p), (sname, q) in zip(stacked.named_parameters(), single.named_parameters()):
            assert pname == sname
            torch.testing.assert_close(q.grad, p.grad[i], rtol=1e-12, atol=1e-14, msg=pname)
    assert stacked.seed_module(-1).state_dict().keys() == stacked.state_dict().keys()
    torch.testing.assert_close(stacked.seed_module(-1)(x[-1]), y[-1].detach(), rtol=1e-12, atol=1e-14)


def test_seed_module_is_a_copy(variant):
    name, opts = variant
    stacked = make(name, opts, num_seeds=S)
    single = stacked.seed_module(1)
    before = params_of(stacked)
    with torch.no_grad():
        for p in single.parameters():
            p.add_(1.0)
    assert_state_equal(before, params_of(stacked))


def test_seed_module_errors(variant):
    name, opts = variant
    with pytest.raises(nalm.ConfigError):
        make(name, opts).seed_module(0)
    stacked = make(name, opts, num_seeds=S)
    for i in (S, -S - 1):
        with pytest.raises(nalm.ConfigError):
            stacked.seed_module(i)


def test_stacked_regularization_loss(variant):
    name, opts = variant
    stacked = make(name, opts, num_seeds=S, dtype=F64)
    if not hasattr(stacked, "regularization_loss"):
        return  # nothing to compare: this unit has no regulariser
    with torch.no_grad():  # spread the parameters so that every seed has a different, non-trivial value
        for p in stacked.parameters():
            p.copy_(positive_inputs(*p.shape, low=0.05, high=0.95, seed=3))
    reg = stacked.regularization_loss()
    assert reg.shape == (S,)
    assert torch.isfinite(reg).all() and (reg != 0).all()  # != 0, not > 0: the MCFC's is negative by definition
    for i in range(S):
        ri = stacked.seed_module(i).regularization_loss()
        assert ri.shape == ()
        torch.testing.assert_close(ri, reg[i], rtol=1e-12, atol=0)


def test_stacked_post_step(variant):
    name, opts = variant
    stacked = make(name, opts, num_seeds=S, dtype=F64)
    if not hasattr(stacked, "post_step"):
        return  # nothing to compare: this unit has no projection step
    with torch.no_grad():  # push every parameter out of any range the unit keeps it in
        for p in stacked.parameters():
            p.copy_(torch.randn(p.shape, dtype=F64, generator=torch.Generator().manual_seed(4)) * 3)
    singles = [stacked.seed_module(i) for i in range(S)]
    before = params_of(stacked)
    stacked.post_step()
    assert any(not torch.equal(v, params_of(stacked)[k]) for k, v in before.items()), "post_step did nothing"
    for i, single in enumerate(singles):
        single.post_step()
        assert_state_equal(params_of(single), {k: v[i] for k, v in params_of(stacked).items()})


def test_per_seed_generators(variant):
    name, opts = variant
    stacked = make(name, opts, num_seeds=S)
    stacked.reset_parameters(generator=[torch.Generator().manual_seed(100 + i) for i in range(S)])
    stacked_params = params_of(stacked)
    for i in range(S):
        single = make(name, opts, seed=50 + i)
        single.reset_parameters(generator=torch.Generator().manual_seed(100 + i))
        assert_state_equal(params_of(single), {k: v[i] for k, v in stacked_params.items()})
    # Different streams give different seeds.
    assert any(not torch.equal(v[0], v[1]) for v in stacked_params.values())
    with pytest.raises(nalm.ConfigError):
        stacked.reset_parameters(generator=[torch.Generator() for _ in range(S - 1)])
    with pytest.raises(nalm.ConfigError):
        make(name, opts).reset_parameters(generator=[torch.Generator()])


def test_seed_independence_under_nan_and_inf(variant):
    name, opts = variant
    stacked = make(name, opts, 3, 2, num_seeds=3, dtype=F64)
    x = signed_inputs(3, 6, 3, dtype=F64, seed=5)
    coef = signed_inputs(3, 6, 2, dtype=F64, seed=6)

    def run(inputs):
        stacked.zero_grad(set_to_none=True)
        y = stacked(inputs)
        (y * coef).sum().backward()
        return y.detach(), {k: p.grad.clone() for k, p in stacked.named_parameters()}

    y_clean, g_clean = run(x)
    bad = x.clone()
    bad[1, 0, 0] = math.nan
    bad[1, 2, 1] = math.inf
    bad[1, 4, 2] = -math.inf
    y_bad, g_bad = run(bad)
    assert not torch.isfinite(y_bad[1]).all()  # seed 1 is broken...
    for i in (0, 2):  # ...and no other seed notices
        assert torch.equal(y_bad[i], y_clean[i])
        assert torch.isfinite(y_bad[i]).all()
        for k in g_clean:
            assert torch.equal(g_bad[k][i], g_clean[k][i]), k
            assert torch.isfinite(g_bad[k][i]).all(), k


# -- the registry and its errors -----------------------------------------------------------------------------------
def test_list_units_has_the_paper_and_its_successors():
    assert {"nac", "nac_mul", "nalu", "nau", "nmu", "inalu", "npu", "realnpu", "linear"} <= set(nalm.list_units())
    assert nalm.list_units() == sorted(nalm.list_units())


def test_unknown_unit_lists_known_names():
    with pytest.raises(nalm.ConfigError) as e:
        nalm.get_unit("nalu2", 2, 1)
    msg = str(e.value)
    assert "nalu2" in msg
    for name in nalm.list_units():
        assert name in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, nalm.NalmError)


@pytest.mark.parametrize("name", nalm.list_units())
def test_unknown_option_lists_allowed_options(name):
    with pytest.raises(nalm.ConfigError) as e:
        nalm.get_unit(name, 2, 1, epz=1)
    msg = str(e.value)
    assert "epz" in msg
    for option in nalm.unit_options(name):
        assert option in msg


def test_unknown_option_message_for_nmu_and_nalu():
    with pytest.raises(nalm.ConfigError, match="epz"):
        nalm.get_unit("nmu", 2, 1, epz=1)
    with pytest.raises(nalm.ConfigError) as e:
        nalm.get_unit("nalu", 2, 1, epz=1)
    assert all(k in str(e.value) for k in ("tied", "gate", "eps"))


@pytest.mark.parametrize("name", nalm.list_units())
def test_options_are_complete(name):
    """``options`` (what seed_module copies) must name every constructor option, or copies silently lose it."""
    assert set(nalm.unit_options(name)) == set(unit_class(name).options)


def test_unit_options_defaults():
    assert nalm.unit_options("nalu") == {"tied": True, "gate": "input", "eps": 1e-7, "gate_value": 1.0}
    assert nalm.unit_options("nmu") == {}


@pytest.mark.parametrize("name, opts", [
    ("nalu", {"gate": "foo"}),
    ("nalu", {"eps": -1}),
    ("nalu", {"eps": 0}),
    ("nalu", {"eps": math.nan}),
    ("nalu", {"tied": "yes"}),
    ("nac_mul", {"eps": -1}),
    ("inalu", {"omega": 0}),
    ("inalu", {"eps": -1e-7}),
    ("inalu", {"reg_threshold": -1}),
    ("npu", {"eps": 0}),
    ("realnpu", {"eps": "small"}),
    ("linear", {"bias": "no"}),
    ("gnalu", {"gate": "foo"}),
    ("nru", {"sharpness": 0}),
    ("nmru", {"sign_retrieval": "yes"}),
    ("snmu", {"noise_low": -1.0}),
    ("snmu", {"noise_high": math.inf}),
    ("mcfc", {"mode": "sub"}),
    ("mcfc", {"eps": 0}),
    ("inalu", {"init": "xavier"}),
    ("inalu", {"reg_reduction": "max"}),
    ("inalu", {"reinit": "yes"}),
])
def test_bad_option_values(name, opts):
    with pytest.raises(nalm.ConfigError) as e:
        nalm.get_unit(name, 2, 1, **opts)
    (key, value), = opts.items()
    assert key in str(e.value)


@pytest.mark.parametrize("args, kwargs", [
    ((0, 1), {}), ((2, -1), {}), ((2.5, 1), {}), ((True, 1), {}), ((2, 1), {"num_seeds": 0}),
    ((2, 1), {"num_seeds": 2.0}),
])
def test_bad_sizes(args, kwargs):
    for name in nalm.list_units():
        with pytest.raises(nalm.ConfigError):
            nalm.get_unit(name, *args, **kwargs)


def test_register_unit_twice_is_an_error():
    class Dummy(ArithmeticUnit):
        pass

    with pytest.raises(nalm.ConfigError, match="nac"):
        register_unit("nac")(Dummy)
    assert nalm.get_unit("nac", 2, 1).unit_name == "nac"


# -- the effective weight is recomputed on every forward ---------------------------------------------------------
@pytest.mark.parametrize("name", ["nac", "nac_mul", "nalu"])
def test_optimiser_step_changes_weight_and_output(name):
    """Fails if W = tanh(Ŵ)·σ(M̂) were computed once in __init__ (a bug of several public ports)."""
    unit = make(name, {}, 2, 1)
    x = positive_inputs(16, 2, low=1.0, high=2.0, dtype=torch.float32)
    target = x.prod(-1, keepdim=True) + 3
    w_hat, m_hat = unit.W_hat.detach().clone(), unit.M_hat.detach().clone()
    w0 = unit.weight.detach().clone()
    y0 = unit(x).detach()
    opt = torch.optim.Adam(unit.parameters(), lr=0.1)
    (unit(x) - target).square().mean().backward()
    opt.step()
    assert not torch.equal(unit.W_hat.detach(), w_hat)
    assert not torch.equal(unit.M_hat.detach(), m_hat)
    assert not torch.equal(unit.weight.detach(), w0)
    assert not torch.equal(unit(x).detach(), y0)
    assert (unit(x) - target).square().mean() < (y0 - target).square().mean()


@pytest.mark.parametrize("name", ["nac", "nac_mul", "nalu"])
def test_weight_property_tracks_parameters(name):
    unit = make(name, {}, 3, 2)
    x = signed_inputs(4, 3)
    y0 = unit(x).detach()
    with torch.no_grad():
        unit.W_hat.add_(0.7)
    torch.testing.assert_close(unit.weight, torch.tanh(unit.W_hat) * torch.sigmoid(unit.M_hat), rtol=0, atol=0)
    assert not torch.equal(unit(x).detach(), y0)
    with torch.no_grad():
        unit.M_hat.mul_(-2.0)
    torch.testing.assert_close(unit.weight, torch.tanh(unit.W_hat) * torch.sigmoid(unit.M_hat), rtol=0, atol=0)


def test_nalu_weights_tied_by_default():
    unit = make("nalu", {}, 3, 2)
    assert unit.weight_mul is not None
    torch.testing.assert_close(unit.weight_mul, unit.weight, rtol=0, atol=0)
    untied = make("nalu", {"tied": False}, 3, 2)
    assert not torch.equal(untied.weight_mul, untied.weight)
    with torch.no_grad():
        untied.W_hat_mul.add_(0.3)
    torch.testing.assert_close(untied.weight_mul, torch.tanh(untied.W_hat_mul) * torch.sigmoid(untied.M_hat_mul),
                               rtol=0, atol=0)


def test_inalu_weights_track_parameters():
    unit = make("inalu", {}, 3, 2)
    with torch.no_grad():
        unit.W_hat_add.add_(0.5)
        unit.M_hat_mul.sub_(0.5)
    torch.testing.assert_close(unit.weight_add, torch.tanh(unit.W_hat_add) * torch.sigmoid(unit.M_hat_add),
                               rtol=0, atol=0)
    torch.testing.assert_close(unit.weight_mul, torch.tanh(unit.W_hat_mul) * torch.sigmoid(unit.M_hat_mul),
                               rtol=0, atol=0)


# -- post_step keeps the constrained parameters in range -----------------------------------------------------------
@pytest.mark.parametrize("name, attr, low, high", [
    ("nau", "weight", -1.0, 1.0), ("nmu", "weight", 0.0, 1.0), ("npu", "gate", 0.0, 1.0),
    ("realnpu", "gate", 0.0, 1.0),
])
def test_post_step_clamps(name, attr, low, high):
    unit = make(name, {}, 3, 2)
    with torch.no_grad():
        getattr(unit, attr).copy_(torch.linspace(-3, 3, getattr(unit, attr).numel()).reshape(getattr(unit, attr).shape))
    unit.post_step()
    p = getattr(unit, attr)
    assert p.min() == low and p.max() == high


@pytest.mark.parametrize("name, low, high", [("nau", -0.5, 0.5), ("nmu", 0.25, 0.75)])
def test_madsen_init_ranges(name, low, high):
    unit = make(name, {}, 3, 2)
    assert unit.weight.min() >= low and unit.weight.max() <= high
    assert unit.weight.std() > 0


def test_npu_init():
    unit = make("npu", {}, 3, 2)
    assert torch.equal(unit.W_imag, torch.zeros(2, 3))
    assert torch.equal(unit.gate, torch.full((1, 3), 0.5))
    assert not hasattr(make("realnpu", {}, 3, 2), "W_imag")


# -- exactness far outside any training range, with exact weights set by hand --------------------------------------
def big_pair(n: int = 200, low: float = 1e6, high: float = 2e6, signs: bool = True, seed: int = 0):
    x = positive_inputs(n, 2, low=low, high=high, seed=seed)
    if signs:
        x = x * (torch.randint(0, 2, (n, 2), generator=torch.Generator().manual_seed(seed + 1)) * 2 - 1)
    return x


@pytest.mark.parametrize("name", ["nac", "nau", "linear"])
def test_additive_units_exact_at_1e6(name):
    unit = nalm.get_unit(name, 2, 2, dtype=F64)
    w = [[1.0, 1.0], [1.0, -1.0]]
    if name == "nac":
        set_nac(unit.W_hat, unit.M_hat, w)
    else:
        with torch.no_grad():
            unit.weight.copy_(torch.tensor(w, dtype=F64))
    assert torch.equal(unit.weight, torch.tensor(w, dtype=F64))
    x = big_pair()
    a, b = x[:, 0], x[:, 1]
    y = unit(x)
    assert rel_err(y[:, 0], a + b) < 1e-12
    assert rel_err(y[:, 1], a - b) < 1e-12


def test_nmu_exact_products_with_signs():
    unit = nalm.get_unit("nmu", 2, 3, dtype=F64)
    with torch.no_grad():
        unit.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=F64))
    x = big_pair(low=1e3, high=1e4)
    a, b = x[:, 0], x[:, 1]
    y = unit(x)
    assert rel_err(y[:, 0], a * b) < 1e-12
    assert rel_err(y[:, 1], a) < 1e-12
    assert rel_err(y[:, 2], b) < 1e-12
    assert (torch.sign(y[:, 0]) == torch.sign(a * b)).all() and (a * b < 0).any() and (a * b > 0).any()


@pytest.mark.parametrize("gate", ["input", "independent"])
def test_nalu_both_paths_exact(gate):
    unit = nalm.get_unit("nalu", 2, 1, dtype=F64, gate=gate)
    set_nac(unit.W_hat, unit.M_hat, [[1.0, 1.0]])  # tied: both paths share W = [1, 1]
    x = big_pair(low=1e3, high=1e4, signs=False)
    a, b = x[:, 0], x[:, 1]

    def set_gate(logit: float):
        with torch.no_grad():
            if gate == "input":
                unit.G.fill_(logit)  # g = σ(x Gᵀ) with x > 0 large
            else:
                unit.g_hat.fill_(logit)

    set_gate(-50.0)  # g ≈ 0: the multiplicative path
    assert rel_err(unit(x)[:, 0], a * b) < 1e-5  # ε = 1e-7 enters the log
    set_gate(50.0)  # g == 1 exactly in float64: the additive path
    assert rel_err(unit(x)[:, 0], a + b) < 1e-12


def test_nalu_drops_the_sign():
    """The known limit of NALU's log path (and NAC•): |a|·|b|, whatever the signs."""
    unit = nalm.get_unit("nalu", 2, 1, dtype=F64, gate="independent")
    set_nac(unit.W_hat, unit.M_hat, [[1.0, 1.0]])
    with torch.no_grad():
        unit.g_hat.fill_(-50.0)
    x = torch.tensor([[-3.0, 4.0]], dtype=F64)
    assert abs(unit(x).item() - 12.0) < 1e-5


@pytest.mark.parametrize("name", ["nac_mul", "npu", "realnpu"])
def test_log_space_units_divide_and_multiply_positive(name):
    unit = nalm.get_unit(name, 2, 2, dtype=F64)
    w = [[1.0, -1.0], [1.0, 1.0]]
    if name == "nac_mul":
        set_nac(unit.W_hat, unit.M_hat, w)
        rtol = 1e-5  # ε = 1e-7 enters log(|x| + ε)
    else:
        with torch.no_grad():
            unit.W_real.copy_(torch.tensor(w, dtype=F64))
            unit.gate.fill_(1.0)
        rtol = 1e-12  # r = |x| exactly: ε only floors r
    x = big_pair(low=1e2, high=1e4, signs=False)
    a, b = x[:, 0], x[:, 1]
    y = unit(x)
    assert rel_err(y[:, 0], a / b) < rtol
    assert rel_err(y[:, 1], a * b) < rtol


@pytest.mark.parametrize("name", ["npu", "realnpu"])
def test_npu_products_and_quotients_of_negative_numbers(name):
    unit = nalm.get_unit(name, 2, 2, dtype=F64)
    with torch.no_grad():
        unit.W_real.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64))
        unit.gate.fill_(1.0)
    x = torch.tensor([[3e3, 7e3], [-3e3, 7e3], [3e3, -7e3], [-3e3, -7e3]], dtype=F64)
    x = torch.cat([x, big_pair(low=1e2, high=1e4, seed=7)])
    a, b = x[:, 0], x[:, 1]
    y = unit(x)
    assert rel_err(y[:, 0], a * b) < 1e-12
    assert rel_err(y[:, 1], a / b) < 1e-12
    assert torch.equal(torch.sign(y[:4, 0]), torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=F64))


def test_npu_gate_switches_an_input_off():
    unit = nalm.get_unit("npu", 2, 1, dtype=F64)
    with torch.no_grad():
        unit.W_real.copy_(torch.tensor([[2.0, 5.0]], dtype=F64))
        unit.gate.copy_(torch.tensor([[1.0, 0.0]], dtype=F64))  # input 1 is irrelevant: r = 1, whatever x
    x = torch.tensor([[-3.0, 0.0], [5.0, -123.0]], dtype=F64)
    torch.testing.assert_close(unit(x)[:, 0], torch.tensor([9.0, 25.0], dtype=F64), rtol=1e-12, atol=0)


def test_inalu_mixed_sign_products_and_sums():
    unit = nalm.get_unit("inalu", 2, 1, dtype=F64)
    set_nac(unit.W_hat_mul, unit.M_hat_mul, [[1.0, 1.0]])
    set_nac(unit.W_hat_add, unit.M_hat_add, [[1.0, -1.0]])
    x = big_pair(low=1e2, high=1e4)  # |a·b| <= 1e8 < exp(ω) = exp(20) ≈ 4.9e8
    a, b = x[:, 0], x[:, 1]
    assert (a * b < 0).any() and (a * b > 0).any()
    with torch.no_grad():
        unit.g_hat.fill_(-50.0)  # g ≈ 2e-22: the multiplicative path
    assert rel_err(unit(x)[:, 0], a * b) < 1e-12  # |x| > ε: ε never enters
    with torch.no_grad():
        unit.g_hat.fill_(50.0)  # g == 1: the additive path
    assert rel_err(unit(x)[:, 0], a - b) < 1e-12


def test_inalu_caps_the_log_path_at_omega():
    unit = nalm.get_unit("inalu", 2, 1, dtype=F64)
    set_nac(unit.W_hat_mul, unit.M_hat_mul, [[1.0, 1.0]])
    with torch.no_grad():
        unit.g_hat.fill_(-50.0)
    y = unit(torch.tensor([[1e5, -1e5]], dtype=F64))
    torch.testing.assert_close(y, torch.tensor([[-math.exp(20.0)]], dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("eps", [0.0, -1e-7, float("inf"), float("nan"), True])
def test_eps_must_be_positive_and_finite(eps):
    with pytest.raises(nalm.ConfigError, match="eps"):
        nalm.get_unit("nalu", 2, 1, eps=eps)
