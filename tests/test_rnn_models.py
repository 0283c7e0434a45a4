"""Sequence models of the program-evaluation task: UGRNN, LSTM, DNC and the LSTM-configured NALU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalm.engine.task import torch_generators
from nalm.errors import ConfigError, ShapeError
from nalm.experiments.programs import models as R
from nalm.experiments.programs import task as P
from nalm.nn.models import SeedRNN

NAMES = list(R.SEQUENCE_MODELS)
SMALL = {"dnc": {"memory_size": 5, "word_size": 4, "read_heads": 2}}


def build(name: str, num_seeds: int = 2, seeds=None, **options) -> R.SequenceRegressor:
    seeds = list(range(num_seeds)) if seeds is None else seeds
    model = R.build_sequence_model(name, P.FEATURES, num_seeds=num_seeds, hidden_size=6,
                                   pad_channel=P.PAD_CHANNEL, generators=torch_generators(seeds, "init"),
                                   **{**SMALL.get(name, {}), **options})
    return model.double()


def programs(count: int = 5, seed: int = 0) -> list[P.Program]:
    config = P.ProgramConfig(nesting=2, operations="pair,vars,ifstat")
    return P.generate_many(config, np.random.Generator(np.random.SFC64(seed)), count)


def batch(progs, scale: float = 0.01, length: int | None = None) -> torch.Tensor:
    x, _ = P.encode_batch(progs, scale, length, dtype=np.float64)
    return torch.from_numpy(x).unsqueeze(0)  # (1, B, T, F): one batch shared by every seed


# -- the equations ------------------------------------------------------------------------------------------------


def test_ugrnn_matches_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    model = R.UGRNN(3, 2, num_seeds=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(generator=gen)
    x = torch.randn(2, 1, 4, 3, dtype=torch.float64, generator=gen)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for s in range(2):
        wx, wh, b = (t[s].detach().numpy() for t in (model.weight_x, model.weight_h, model.bias))
        h = np.zeros(2)
        for t in range(4):
            pre = wx @ x[s, 0, t].numpy() + wh @ h + b[0]
            g, c = sig(pre[:2] + 1.0), np.tanh(pre[2:])
            h = g * h + (1 - g) * c
        y = model.readout.weight[s].detach().numpy() @ h + model.readout.b[s, 0].detach().numpy()
        assert model(x)[s, 0].detach().numpy() == pytest.approx(y, rel=1e-12)


def test_lstm_regressor_is_seedrnn_with_a_readout():
    model = build("lstm")
    x = batch(programs(4))[..., :, -7:, :]  # the last 7 steps: no pad steps at all
    expected = model.readout(SeedRNN.forward(model.rnn, x.expand(2, -1, -1, -1)))
    assert torch.allclose(model(x), expected, rtol=1e-12, atol=1e-12)


# -- DNC memory operations on hand-set cases -------------------------------------------------------------------------


def test_allocation_follows_usage_order():
    a = R.allocation_weights(torch.tensor([[0.5, 0.1, 0.9], [1.0, 0.0, 1.0]], dtype=torch.float64))
    # least used first: location 1 gets 1 − 0.1; then location 0: (1 − 0.5)·0.1; then 2: (1 − 0.9)·0.1·0.5
    assert a[0].tolist() == pytest.approx([0.05, 0.9, 0.005], abs=1e-5)
    assert a[1].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-5)  # the one free location


def test_usage_update_frees_read_locations():
    usage = torch.tensor([0.5, 0.0, 0.2])
    u = R.update_usage(usage, torch.tensor([0.0, 1.0, 0.5]), torch.tensor([1.0]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert u.tolist() == pytest.approx([0.0, 1.0, 0.6])  # (u + w − u w) ⊙ (1 − f w_r)


def test_erase_then_write():
    memory = R.write_memory(torch.ones(3, 2), torch.tensor([1.0, 0.0, 0.5]), torch.tensor([1.0, 0.0]),
                            torch.tensor([2.0, 3.0]))
    assert memory.tolist() == [[2.0, 4.0], [1.0, 1.0], [1.5, 2.5]]


def test_temporal_links_record_write_order():
    link, precedence = torch.zeros(3, 3), torch.zeros(3)
    link, precedence = R.update_links(link, precedence, torch.tensor([1.0, 0.0, 0.0]))  # write location 0
    assert link.abs().sum() == 0 and precedence.tolist() == [1.0, 0.0, 0.0]
    link, precedence = R.update_links(link, precedence, torch.tensor([0.0, 0.0, 1.0]))  # then location 2
    expected = torch.zeros(3, 3)
    expected[2, 0] = 1.0  # location 2 was written after location 0
    assert torch.equal(link, expected) and precedence.tolist() == [0.0, 0.0, 1.0]
    forward, backward = R.directional_weights(link, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert forward.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]   # from 0, forward in time is 2
    assert backward.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]  # from 2, backward in time is 0
    half = R.update_links(link, precedence, torch.tensor([0.5, 0.0, 0.0]))[0]
    assert half[2, 0] == pytest.approx(0.5) and half[0, 2] == pytest.approx(0.5)  # (1 − ½)·1 and ½·p₂


def test_content_addressing():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    w = R.content_weights(memory, torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=torch.float64),
                          torch.tensor([50.0, 0.0], dtype=torch.float64))
    assert w.shape == (2, 3) and w[0, 0] > 0.999  # cosine 1 with a sharp key strength
    assert w[1].tolist() == pytest.approx([1 / 3] * 3)  # strength 0: uniform


# -- the LSTM-configured units -------------------------------------------------------------------------------------


def _configure(model: R.HyperNALU, bias: list[float]) -> None:
    """Make the hypernetwork's output constant: p_t = bias at every step."""
    with torch.no_grad():
        model.hyper.weight.zero_()
        model.hyper.b.copy_(torch.tensor(bias, dtype=torch.float64))


@pytest.mark.parametrize("name, options, bias", [
    ("lstm-nau", {}, [1.0, 1.0]),                                        # W = [1, 1]
    ("lstm-nalu", {"gate": "hidden"}, [30.0, 30.0, 30.0, 30.0, 40.0]),   # W = tanh(Ŵ)σ(M̂) = 1, g = 1
    ("lstm-nalu", {"gate": "input"}, [30.0, 30.0, 30.0, 30.0, 30.0, 30.0]),  # g = σ(G z), G = [30, 30]
    ("lstm-nau-nmu", {"gate": "hidden"}, [1.0, 1.0, 0.0, 0.0, 40.0]),
])
def test_configured_unit_accumulates_the_values(name, options, bias):
    """With W = [1, 1] at every step, y_t = v_t + y_{t−1}: the prediction is the sum of the program's numbers."""
    model = build(name, **options)
    _configure(model, bias)
    config = P.ProgramConfig(kind="add", low=1000, high=10000)
    progs = P.generate_many(config, np.random.Generator(np.random.SFC64(1)), 6)
    pred = model(batch(progs, scale=1.0))
    expected = torch.tensor([float(P.evaluate(p)) for p in progs], dtype=torch.float64)
    assert torch.allclose(pred[..., 0], expected.expand(2, -1), rtol=1e-9, atol=1e-6)


def test_value_blind_controller_makes_the_nau_linear_in_the_values():
    """The controller sees tokens only, so the configured NAU computes a linear function of the numbers: ten
    times larger numbers give a ten times larger prediction (why the model can extrapolate)."""
    x = batch(programs(6), scale=0.01)
    big = x.clone()
    big[..., P.VALUE_CHANNEL] *= 10
    blind = build("lstm-nau")
    assert torch.allclose(blind(big), 10 * blind(x), rtol=1e-9, atol=1e-12)
    seeing = build("lstm-nau", controller_sees_value=True)
    assert not torch.allclose(seeing(big), 10 * seeing(x), rtol=1e-3)


# -- padding, seeds, initialisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_prediction_does_not_depend_on_padding(name):
    model = build(name)
    progs = programs(5)
    together = model(batch(progs, length=40))  # (2, 5, 1), every program padded
    for i, p in enumerate(progs):
        alone = model(batch([p]))  # no pad step at all
        assert torch.allclose(together[:, i], alone[:, 0], rtol=1e-10, atol=1e-12)


def test_padding_would_matter_without_the_pad_channel():
    """The negative control of the test above: a model that is not told the pad channel reads pad steps."""
    model = build("lstm")
    model.pad_channel = None
    p = programs(1)
    assert not torch.allclose(model(batch(p, length=30)), model(batch(p)))


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_independent(name):
    model = build(name, num_seeds=3)
    x = batch(programs(4))
    before = model(x)
    with torch.no_grad():
        for p in model.parameters():
            p[1].add_(0.3)
    after = model(x)
    assert torch.equal(after[[0, 2]], before[[0, 2]]) and not torch.allclose(after[1], before[1])
    model.zero_grad()
    after[0].sum().backward()  # seed 0's loss reaches seed 0's parameters only
    for p in model.parameters():
        assert p.grad is None or (p.grad[1:] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_each_seed_initialises_from_its_own_generator(name):
    stacked, single = build(name, num_seeds=2, seeds=[5, 8]), build(name, num_seeds=1, seeds=[8])
    for (key, a), b in zip(stacked.state_dict().items(), single.state_dict().values()):
        assert torch.equal(a[1], b[0]), key
    again = build(name, num_seeds=2, seeds=[5, 8])
    assert all(torch.equal(a, b) for a, b in zip(stacked.parameters(), again.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_gradients(name):
    model = build(name, num_seeds=2).float()
    x, y = P.sample_batch(P.ProgramConfig(), [np.random.SFC64(0), np.random.SFC64(1)], 3, value_scale=0.01)
    out = model(x)
    assert out.shape == (2, 3, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()
    ((out - y) ** 2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="'gru'"):
        R.build_sequence_model("gru", 4, num_seeds=1)
    with pytest.raises(ConfigError, match="'read_heads'"):
        R.build_sequence_model("lstm", 4, num_seeds=1, read_heads=2)
    with pytest.raises(ConfigError, match="cell|gate"):
        R.build_sequence_model("lstm-nalu", 4, num_seeds=1, gate="sideways")
    model = R.build_sequence_model("ugrnn", 4, num_seeds=2)
    with pytest.raises(ShapeError, match=r"\(2, 3, 5, 5\)"):
        model(torch.zeros(2, 3, 5, 5))
    with pytest.raises(ShapeError):
        model(torch.zeros(3, 3, 5, 4))  # 3 seeds for a 2-seed model


def test_gate_bias_shifts_the_initial_gate_logit():
    plain, biased = build("lstm-nalu", gate="hidden"), build("lstm-nalu", gate="hidden", gate_bias=2.5)
    assert torch.allclose(biased.hyper.b[..., -1] - plain.hyper.b[..., -1], torch.full((2, 1), 2.5,
                                                                                       dtype=torch.float64))
    assert torch.equal(biased.hyper.b[..., :-1], plain.hyper.b[..., :-1])
    constructed = R.HyperNALU(4, 3, num_seeds=1, gate="hidden", gate_bias=100.0)  # at construction too
    assert 99 < constructed.hyper.b[0, 0, -1] < 101  # the initial bias is within ±1/√3 of 0
