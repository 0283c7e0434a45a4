"""nalm.nn.ensemble.Ensemble: S copies of an ordinary nn.Module as one module with a seed axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nalm.errors import ConfigError, ShapeError
from nalm.nn.ensemble import Ensemble, auto_mode, seeded

S = 3
F64 = {"dtype": torch.float64}


def conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, **F64), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2, **F64), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 2, **F64))


def bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5, **F64), nn.BatchNorm1d(5, **F64), nn.Tanh(), nn.Linear(5, 2, **F64))


class LSTMNet(nn.Module):
    """torch's nn.LSTM with a linear read-out of the final state: (B, T, 3) -> (B, 2)."""

    def __init__(self):
        super().__init__()
        self.lstm, self.out = nn.LSTM(3, 4, batch_first=True, **F64), nn.Linear(4, 2, **F64)

    def forward(self, x):
        return self.out(self.lstm(x)[1][0][-1])


class LinearLSTM(nn.Module):
    """The LSTM equations with nn.Linear layers (which vmap can batch): (B, T, 3) -> (B, 2)."""

    def __init__(self):
        super().__init__()
        self.ih, self.hh, self.out = nn.Linear(3, 16, **F64), nn.Linear(4, 16, **F64), nn.Linear(4, 2, **F64)

    def forward(self, x):
        gi, h = self.ih(x), x.new_zeros(x.shape[0], 4)
        c = h
        for t in range(x.shape[1]):
            i, f, g, o = (gi[:, t] + self.hh(h)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.out(h)


def inputs(factory, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = {conv_net: (1, 8, 8), bn_mlp: (4,)}.get(factory, (5, 3))  # the LSTMs take (B, T=5, 3)
    return torch.randn((S, 6) + shape, generator=g, **F64)


def gens(n: int = S, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + offset + i) for i in range(n)]


def loss_of(y: torch.Tensor) -> torch.Tensor:
    """Each seed's own mean loss, summed over seeds (so each seed's gradient is its own loss's)."""
    return y.pow(2).flatten(1).mean(1).sum()


def close(a, b, rtol=1e-12, atol=1e-14):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("factory", [conv_net, bn_mlp, LinearLSTM])
def test_vmap_and_loop_agree_on_values_gradients_and_buffers(factory):
    x = inputs(factory)
    runs = []
    for mode in ("vmap", "loop"):
        ens = Ensemble(factory, S, generators=gens(), mode=mode)
        y = ens(x)
        loss_of(y).backward()
        runs.append((y, {n: p.grad for n, p in ens.named_parameters()}, dict(ens.named_buffers())))
    (y_v, g_v, b_v), (y_l, g_l, b_l) = runs
    close(y_v, y_l)
    assert g_v.keys() == g_l.keys() and len(g_v) > 0
    for name in g_v:
        close(g_v[name], g_l[name], atol=1e-13)
    for name in b_v:  # BatchNorm's running statistics, updated per seed
        close(b_v[name], b_l[name])
    if factory is bn_mlp:
        assert b_v["stacked.1.num_batches_tracked"].tolist() == [1] * S
        assert not torch.allclose(b_v["stacked.1.running_mean"][0], b_v["stacked.1.running_mean"][1])


def test_vmap_cannot_batch_nn_lstm_so_auto_uses_the_loop():
    x = inputs(LSTMNet)
    with pytest.raises(ConfigError, match="mode='loop'"):
        Ensemble(LSTMNet, S, mode="vmap")(x)
    ens = Ensemble(LSTMNet, S)
    assert ens.mode == "loop"
    assert ens(x).shape == (S, 6, 2)


@pytest.mark.parametrize("factory, mode", [
    (conv_net, "loop"), (LSTMNet, "loop"), (lambda: nn.GRUCell(3, 4), "loop"), (bn_mlp, "vmap"),
    (LinearLSTM, "vmap"), (lambda: nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 1)), "vmap")])
def test_auto_mode_rule(factory, mode):
    assert auto_mode(factory()) == mode
    assert Ensemble(factory, 2).mode == mode


@pytest.mark.parametrize("factory", [conv_net, LSTMNet, bn_mlp])
def test_seed_i_equals_a_single_model_built_from_generator_i(factory):
    before = torch.random.get_rng_state()
    ens = Ensemble(factory, S, generators=gens())
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's global RNG is untouched
    ens.eval()
    x = inputs(factory)
    y = ens(x)
    for i, g in enumerate(gens()):
        single = seeded(factory, g).eval()
        for (name, p), (_, q) in zip(single.named_parameters(), ens.stacked.named_parameters()):
            assert torch.equal(p, q[i]), name
        close(single(x[i]), y[i])
    # different seeds start differently; reset_parameters reproduces the construction exactly
    p0 = next(ens.parameters())
    assert not torch.equal(p0[0], p0[1])
    other = Ensemble(factory, S, generators=gens(offset=50))
    other.reset_parameters(gens())
    for p, q in zip(ens.parameters(), other.parameters()):
        assert torch.equal(p, q)


def test_numpy_generators_and_one_shared_generator():
    a = Ensemble(bn_mlp, 2, generators=[np.random.default_rng(1), np.random.default_rng(2)])
    b = seeded(bn_mlp, np.random.default_rng(2))
    assert torch.equal(a.stacked[0].weight[1], b[0].weight)
    # one generator for all seeds: seed i is built from the i-th integer drawn from it
    shared, g = Ensemble(bn_mlp, 2, generators=torch.Generator().manual_seed(5)), torch.Generator().manual_seed(5)
    for i, single in enumerate([seeded(bn_mlp, g), seeded(bn_mlp, g)]):
        assert torch.equal(shared.stacked[0].weight[i], single[0].weight)
    a.reset_parameters(np.random.default_rng(3))
    assert not torch.equal(a.stacked[0].weight[0], a.stacked[0].weight[1])


@pytest.mark.parametrize("factory", [conv_net, LSTMNet])
def test_training_s_seeds_together_equals_training_each_alone(factory):
    ens = Ensemble(factory, S, generators=gens())
    opt = torch.optim.Adam(ens.parameters(), lr=1e-2, foreach=True)
    singles = [seeded(factory, g) for g in gens()]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2, foreach=True) for m in singles]
    for step in range(4):
        x = inputs(factory, seed=step)
        opt.zero_grad()
        loss_of(ens(x) - 1.0).backward()
        opt.step()
        for i, (m, o) in enumerate(zip(singles, opts)):
            o.zero_grad()
            (m(x[i]) - 1.0).pow(2).mean().backward()
            o.step()
    for i, (m, start) in enumerate(zip(singles, [seeded(factory, g) for g in gens()])):
        for p, q, p0 in zip(m.parameters(), ens.parameters(), start.parameters()):
            close(p, q[i], rtol=1e-10, atol=1e-12)
            assert (p - p0).abs().max() > 1e-3  # it did train


@pytest.mark.parametrize("factory, mode", [(conv_net, "vmap"), (conv_net, "loop"), (LSTMNet, "loop")])
@pytest.mark.parametrize("poison", ["scale", "nan"])
def test_a_seeds_gradients_do_not_depend_on_another_seeds_inputs(factory, mode, poison):
    x = inputs(factory)
    grads = []
    for x_run in (x, x.clone()):
        if len(grads):
            x_run[0] = x_run[0] * 1e6 if poison == "scale" else float("nan")
        ens = Ensemble(factory, S, generators=gens(), mode=mode)
        loss_of(ens(x_run)).backward()
        grads.append([p.grad for p in ens.parameters()])
    for g_clean, g_poisoned in zip(*grads):
        torch.testing.assert_close(g_clean[1:], g_poisoned[1:], rtol=0, atol=0)
    if poison == "nan":
        assert any(torch.isnan(g[0]).any() for g in grads[1])


def test_seed_module_round_trip_and_state_dict():
    ens = Ensemble(LSTMNet, S, generators=gens())
    x = inputs(LSTMNet)
    y = ens(x)
    single = ens.seed_module(2)
    assert type(single) is LSTMNet and single.lstm.weight_hh_l0.shape == (16, 4)
    close(single(x[2]), y[2])
    with torch.no_grad():  # a copy: changing it leaves the ensemble alone
        single.out.bias.add_(1.0)
    assert not torch.equal(single.out.bias, ens.stacked.out.bias[2])
    ens.load_seed_module(0, single)  # and back into another seed
    close(ens(x)[0], single(x[0]))
    assert torch.equal(ens.stacked.out.bias[0], single.out.bias)
    # state_dict: the network's own keys with a leading seed axis; loads into a fresh ensemble
    state = ens.state_dict()
    assert state["stacked.lstm.weight_ih_l0"].shape == (S, 16, 3)
    fresh = Ensemble(LSTMNet, S, generators=gens(offset=9))
    fresh.load_state_dict(state)
    close(fresh(x), ens(x))
    close(ens.seed_module(-1)(x[-1]), ens(x)[-1])
    with pytest.raises(ConfigError, match="seed index"):
        ens.seed_module(S)
    with pytest.raises(ShapeError, match="do not match"):
        ens.load_seed_module(0, nn.LSTM(3, 5))


def test_tied_weights_stay_tied_and_tuple_outputs_are_stacked():
    def tied():
        a, b = nn.Linear(3, 3, bias=False, **F64), nn.Linear(3, 3, bias=False, **F64)
        b.weight = a.weight
        return nn.Sequential(a, b)
    ens = Ensemble(tied, S, generators=gens())
    assert ens.stacked[0].weight is ens.stacked[1].weight and len(list(ens.parameters())) == 1
    out, (h, c) = Ensemble(lambda: nn.LSTM(3, 4, batch_first=True, **F64), S)(inputs(LSTMNet))
    assert out.shape == (S, 6, 5, 4) and h.shape == c.shape == (S, 1, 6, 4)


def test_dropout_under_vmap_draws_differently_per_seed():
    y = Ensemble(lambda: nn.Dropout(0.5), 2, mode="vmap")(torch.ones(2, 1000))
    assert not torch.equal(y[0], y[1])


def test_per_seed_gradient_norms_and_clipping_match_torch_on_each_seed():
    ens = Ensemble(bn_mlp, S, generators=gens())
    x = inputs(bn_mlp)
    x[1] *= 100.0  # seed 1 gets a large gradient
    loss_of(ens(x) - 1.0).backward()
    norms = ens.grad_norms()
    singles = [ens.seed_module(i) for i in range(S)]
    for i, m in enumerate(singles):
        for p, q in zip(m.parameters(), ens.parameters()):
            p.grad = q.grad[i].clone()
    expected = [nn.utils.clip_grad_norm_(m.parameters(), 0.5) for m in singles]
    close(norms, torch.stack(expected))
    close(ens.clip_grad_norm_(0.5), norms)
    for i, m in enumerate(singles):
        for p, q in zip(m.parameters(), ens.parameters()):
            close(q.grad[i], p.grad)
    assert ens.grad_norms()[1] == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_seeds": 0}, "num_seeds"), ({"num_seeds": True}, "num_seeds"), ({"num_seeds": "3"}, "num_seeds"),
    ({"mode": "jit"}, "unknown mode 'jit'"), ({"generators": gens(S + 1)}, f"list of {S} generators.*got {S + 1}")])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Ensemble(bn_mlp, **({"num_seeds": S} | kwargs))


def test_factory_must_build_a_new_module_each_call():
    shared = bn_mlp()
    with pytest.raises(ConfigError, match="new nn.Module"):
        Ensemble(lambda: shared, 2)
    with pytest.raises(ConfigError, match="Generator"):
        seeded(bn_mlp, 7)


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_shape_errors_name_the_input_and_the_seed_axis(mode):
    ens = Ensemble(bn_mlp, S, mode=mode)
    with pytest.raises(ShapeError, match=r"input 0 has shape \(2, 6, 4\).*num_seeds=3"):
        ens(torch.zeros(2, 6, 4, **F64))
    with pytest.raises(ShapeError, match=r"input 0 has shape \(\)"):
        ens(torch.tensor(1.0))
