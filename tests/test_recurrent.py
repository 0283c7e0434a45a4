"""nalm.RecurrentCell: h_t = unit([x_t, h_{t−1}]) for every unit."""

from __future__ import annotations

import io

import pytest
import torch

import nalm
from nalm import ConfigError, RecurrentCell, ShapeError
from nalm.units import unit_class

F64 = torch.float64
UNITS = nalm.list_units()
ADDITIVE = {"nac", "nau", "nalu", "inalu", "linear"}
MULTIPLICATIVE = {"nmu", "nac_mul", "npu", "realnpu"}


def signed(*shape, low=0.5, high=1.5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mag = torch.empty(shape, dtype=dtype).uniform_(low, high, generator=g)
    return mag * (torch.randint(0, 2, shape, generator=g).to(dtype) * 2 - 1)


def make_cell(name, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return nalm.RecurrentCell(name, *args, **kwargs)


@pytest.mark.parametrize("name", UNITS)
def test_run_shapes(name):
    cell = make_cell(name, 3, 2)
    assert cell.unit.in_features == 5 and cell.unit.out_features == 2
    xs = signed(4, 5, 3)
    outputs, h = cell.run(xs)
    assert outputs.shape == (4, 5, 2)
    assert h.shape == (4, 2)
    assert torch.equal(h, outputs[:, -1])
    assert torch.isfinite(outputs).all()
    outputs.square().sum().backward()
    for pname, p in cell.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_zero_state_of_the_known_units():
    assert ADDITIVE | MULTIPLICATIVE <= set(UNITS)
    for name in ADDITIVE:
        assert make_cell(name, 3, 2).initial_state == 0.0, name
    for name in MULTIPLICATIVE:
        assert make_cell(name, 3, 2).initial_state == 1.0, name


@pytest.mark.parametrize("name", UNITS)
def test_zero_state_is_used_by_the_first_step(name):
    expected = 1.0 if unit_class(name).multiplicative else 0.0
    if name in ADDITIVE | MULTIPLICATIVE:
        assert expected == (1.0 if name in MULTIPLICATIVE else 0.0)
    cell = make_cell(name, 3, 2)
    h0 = cell.zero_state(4)
    assert h0.shape == (4, 2) and (h0 == expected).all()
    xs = signed(4, 5, 3)
    outputs, _ = cell.run(xs)
    first = cell.unit(torch.cat([xs[:, 0], torch.full((4, 2), expected)], dim=-1))
    torch.testing.assert_close(outputs[:, 0], first, rtol=0, atol=0)
    assert torch.equal(cell(xs[:, 0]), first)  # one step from the default state


@pytest.mark.parametrize("name", UNITS)
def test_initial_state_override_and_continuation(name):
    cell = make_cell(name, 3, 2, initial_state=0.5)
    assert (cell.zero_state(2) == 0.5).all()
    xs = signed(2, 6, 3)
    full, h_full = cell.run(xs)
    first, h = cell.run(xs[:, :2])
    rest, h_rest = cell.run(xs[:, 2:], h)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=0)
    torch.testing.assert_close(h_rest, h_full, rtol=0, atol=0)


@pytest.mark.parametrize("name", UNITS)
def test_stacked_cell_equals_per_seed_cells(name):
    cell = make_cell(name, 3, 2, num_seeds=3, dtype=F64)
    xs = signed(3, 4, 5, 3, dtype=F64, seed=1)
    outputs, h = cell.run(xs)
    assert outputs.shape == (3, 4, 5, 2) and h.shape == (3, 4, 2)
    assert cell.zero_state(4).shape == (3, 4, 2)
    outputs.sum().backward()
    for i in range(3):
        single = cell.seed_module(i)
        assert single.num_seeds is None and single.initial_state == cell.initial_state
        out_i, h_i = single.run(xs[i])
        torch.testing.assert_close(out_i, outputs[i].detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(h_i, h[i].detach(), rtol=1e-12, atol=1e-14)
        out_i.sum().backward()
        for (pname, p), (_, q) in zip(cell.named_parameters(), single.named_parameters()):
            torch.testing.assert_close(q.grad, p.grad[i], rtol=1e-10, atol=1e-12, msg=pname)


@pytest.mark.parametrize("name", UNITS)
def test_cell_state_dict_round_trip(name):
    a, b = make_cell(name, 3, 2, seed=0), make_cell(name, 3, 2, seed=1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    xs = signed(2, 4, 3)
    assert torch.equal(a.run(xs)[0], b.run(xs)[0])


def test_nac_cell_running_sum_is_exact_over_1000_steps():
    cell = nalm.RecurrentCell("nac", 1, 1, dtype=F64)
    with torch.no_grad():
        cell.unit.W_hat.fill_(40.0)  # W = tanh(40)·σ(40) == 1.0 exactly in float64: h_t = x_t + h_{t−1}
        cell.unit.M_hat.fill_(40.0)
    assert torch.equal(cell.unit.weight, torch.ones(1, 2, dtype=F64))
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(-1000, 1001, (3, 1000, 1), generator=g).to(F64)  # integers: every partial sum is exact
    outputs, h = cell.run(xs)
    assert torch.equal(outputs, xs.cumsum(dim=1))
    assert torch.equal(h, xs.sum(dim=1))
    # Real-valued inputs far larger than anything seen in training: the error is float64 rounding only.
    xs = torch.empty(2, 1000, 1, dtype=F64).uniform_(1e5, 1e6, generator=g)
    outputs, _ = cell.run(xs)
    torch.testing.assert_close(outputs, xs.cumsum(dim=1), rtol=1e-13, atol=0)


def test_nau_cell_running_difference():
    cell = nalm.RecurrentCell("nau", 2, 1, dtype=F64)
    with torch.no_grad():
        cell.unit.weight.copy_(torch.tensor([[1.0, -1.0, 1.0]], dtype=F64))  # h_t = a_t − b_t + h_{t−1}
    xs = torch.randint(0, 100, (2, 500, 2), generator=torch.Generator().manual_seed(1)).to(F64)
    outputs, _ = cell.run(xs)
    assert torch.equal(outputs[..., 0], (xs[..., 0] - xs[..., 1]).cumsum(dim=1))


def test_nmu_cell_running_product_is_exact():
    cell = nalm.RecurrentCell("nmu", 1, 1, dtype=F64)
    with torch.no_grad():
        cell.unit.weight.fill_(1.0)  # h_t = x_t · h_{t−1}
    g = torch.Generator().manual_seed(2)
    choices = torch.tensor([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], dtype=F64)  # powers of two: products are exact
    xs = choices[torch.randint(0, 6, (2, 300, 1), generator=g)]
    outputs, h = cell.run(xs)
    assert torch.equal(outputs, xs.cumprod(dim=1))


def test_wrong_shapes():
    cell = nalm.RecurrentCell("nac", 3, 2)
    with pytest.raises(nalm.ShapeError) as e:
        cell.run(torch.randn(4, 3))  # no time axis
    assert "(4, 3)" in str(e.value)
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.randn(4, 5, 4))  # wrong input size
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.randn(2, 4, 5, 3))  # a seed axis the cell does not have
    with pytest.raises(nalm.ShapeError):
        cell.run([[1.0, 2.0, 3.0]])  # not a tensor
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.randn(4, 5, 3), torch.zeros(3, 2))  # h of another batch size
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.randn(4, 5, 3), torch.zeros(4, 3))  # h of the wrong hidden size
    with pytest.raises(nalm.ShapeError):
        cell(torch.randn(4, 4))
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.randn(4, 5, 3, dtype=F64))  # a float64 sequence into a float32 cell


def test_wrong_shapes_stacked():
    cell = nalm.RecurrentCell("nmu", 3, 2, num_seeds=3)
    cell.run(torch.rand(3, 4, 5, 3))
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.rand(4, 5, 3))  # missing seed axis
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.rand(2, 4, 5, 3))  # wrong number of seeds
    with pytest.raises(nalm.ShapeError):
        cell.run(torch.rand(3, 4, 5, 3), torch.ones(3, 4, 3))


def test_cell_errors():
    with pytest.raises(nalm.ConfigError):
        nalm.RecurrentCell("lstm", 3, 2)
    with pytest.raises(nalm.ConfigError):
        nalm.RecurrentCell("nac", 0, 2)
    with pytest.raises(nalm.ConfigError):
        nalm.RecurrentCell("nac", 3, 0)
    with pytest.raises(nalm.ConfigError):
        nalm.RecurrentCell("nmu", 3, 2, epz=1)
    with pytest.raises(nalm.ConfigError):
        nalm.RecurrentCell("nac", 3, 2).seed_module(0)  # no seed axis


def test_cell_passes_options_to_its_unit():
    cell = nalm.RecurrentCell("nalu", 3, 2, num_seeds=2, gate="independent", eps=1e-5)
    assert cell.unit.gate == "independent" and cell.unit.eps == 1e-5
    single = cell.seed_module(1)
    assert single.unit.gate == "independent" and single.unit.eps == 1e-5


def test_cell_rejects_bad_sizes_and_non_tensors():
    with pytest.raises(ConfigError, match="input_size"):
        RecurrentCell("nau", True, 1)
    with pytest.raises(ConfigError, match="hidden_size"):
        RecurrentCell("nau", 2, 0)
    with pytest.raises(ShapeError, match="tensors"):
        RecurrentCell("nau", 2, 1)([[1.0, 2.0]])
