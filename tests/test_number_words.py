"""Number words to numbers (Trask et al. 2018, §4.3): encoding, split, padding and seed independence, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nalm
from nalm.engine.task import torch_generators
from nalm.errors import ConfigError, ShapeError
from nalm.experiments.number_words import task as nw

HAND_WRITTEN = {
    0: "zero", 7: "seven", 13: "thirteen", 20: "twenty", 40: "forty", 99: "ninety nine", 100: "one hundred",
    101: "one hundred and one", 110: "one hundred and ten", 115: "one hundred and fifteen",
    342: "three hundred and forty two", 999: "nine hundred and ninety nine",
}


def model(output="nalu", S=3, seed0=0, dtype=torch.float64, **kw):
    m = nw.NumberWordsModel(output, num_seeds=S, embedding_size=16, hidden_size=6, dtype=dtype, **kw)
    m.reset_parameters(torch_generators(range(seed0, seed0 + S), "init"))
    return m


# -- data ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", sorted(HAND_WRITTEN))
def test_words_of_hand_written_numbers(n):
    assert " ".join(nw.words(n)) == HAND_WRITTEN[n]
    ids = nw.encode(n)
    assert [nw.VOCABULARY[i] for i in ids] == HAND_WRITTEN[n].split()
    assert nw.decode(ids) == HAND_WRITTEN[n]


def test_vocabulary_is_every_word_plus_pad():
    used = {w for n in nw.NUMBERS for w in nw.words(n)}
    assert nw.VOCABULARY[nw.PAD] == "<pad>"
    assert set(nw.VOCABULARY[1:]) == used and len(nw.VOCABULARY) == len(used) + 1 == 31
    assert len(set(nw.VOCABULARY)) == len(nw.VOCABULARY)
    assert not any("-" in w for w in used)
    lengths = [len(nw.encode(n)) for n in nw.NUMBERS]
    assert min(lengths) == 1 and max(lengths) == nw.MAX_TOKENS
    # Every number has its own token sequence.
    assert len({tuple(nw.encode(n)) for n in nw.NUMBERS}) == 1000


@pytest.mark.parametrize("bad", [-1, 1000, 2.5, True, "7"])
def test_words_reject_numbers_outside_0_999(bad):
    with pytest.raises(ConfigError, match="0–999"):
        nw.words(bad)


def test_pad_is_left_padding():
    out = nw.pad([702, 5, 321])
    assert out.dtype == np.int64 and out.shape == (3, 5)
    assert out[0].tolist() == [nw.PAD] + nw.encode(702)
    assert out[1].tolist() == [nw.PAD] * 4 + nw.encode(5)
    assert out[2].tolist() == nw.encode(321)
    with pytest.raises(ConfigError):
        nw.pad([1], length=4)


# -- split --------------------------------------------------------------------------------------------------------
def test_split_sizes_cover_tokens_and_is_disjoint():
    s = nw.split(0)
    assert {k: len(v) for k, v in s.items()} == {"train": 169, "validation": 200, "test": 631}
    assert set(range(20)) <= set(s["train"].tolist())
    train_words = {w for n in s["train"] for w in nw.words(int(n))}
    assert train_words == set(nw.VOCABULARY[1:])
    everything = np.concatenate(list(s.values()))
    assert sorted(everything.tolist()) == list(range(1000))  # disjoint and complete
    assert all(np.all(np.diff(v) > 0) for v in s.values())


def test_split_is_a_function_of_its_seed():
    a, b, c = nw.split(0), nw.split(0), nw.split(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"]) and not np.array_equal(a["test"], c["test"])
    for seed in range(2, 6):  # the invariants hold for other seeds too
        s = nw.split(seed)
        assert [len(s[k]) for k in ("train", "validation", "test")] == [169, 200, 631]
        assert {w for n in s["train"] for w in nw.words(int(n))} == set(nw.VOCABULARY[1:])
    with pytest.raises(ConfigError):
        nw.split(-1)


def test_evaluation_sets_and_training_batch():
    sets = nw.evaluation_sets(0)
    tokens, targets = sets["validation"]
    assert tokens.shape == (1, 200, 5) and tokens.dtype == torch.int64 and targets.shape == (1, 200, 1)
    numbers = nw.split(0)["validation"]
    assert targets[0, :, 0].tolist() == numbers.astype(float).tolist()
    assert tokens[0, 3].tolist() == nw.pad([numbers[3]])[0].tolist()
    idx = np.array([[0, 5], [7, 7], [199, 1]])
    xb, yb = nw.training_batch(tokens, targets, idx)
    assert xb.shape == (3, 2, 5) and yb.shape == (3, 2, 1)
    assert yb[2, 0, 0].item() == numbers[199] and torch.equal(xb[1, 0], tokens[0, 7])
    with pytest.raises(ShapeError):
        nw.training_batch(tokens, targets, np.array([1, 2]))


def test_examples_of_a_split():
    test = set(nw.split(0)["test"].tolist())
    first = nw.examples("test", 4)
    assert [e["number"] for e in first] == sorted(test)[:4]
    drawn = nw.examples("test", 6, seed=3)
    assert drawn == nw.examples("test", 6, seed=3) and drawn != nw.examples("test", 6, seed=4)
    for e in drawn:
        assert e["number"] in test
        assert e["words"] == " ".join(nw.words(e["number"])) and e["tokens"] == nw.encode(e["number"])
    with pytest.raises(ConfigError, match="validation"):
        nw.examples("valid")


# -- model --------------------------------------------------------------------------------------------------------
def test_prediction_does_not_depend_on_the_batch_or_the_padding():
    m = model("nalu")
    numbers = [5, 702, 999, 40, 13]
    tokens, _ = nw.tensors(numbers)
    batched = m(tokens)
    assert batched.shape == (3, 5, 1)
    for j, n in enumerate(numbers):
        alone = m(nw.tensors([n])[0])[:, 0]
        torch.testing.assert_close(alone, batched[:, j], rtol=1e-12, atol=1e-12)
    # Longer left padding, and right padding, give the same values: pad steps keep the state.
    long = torch.as_tensor(nw.pad(numbers, length=9)).unsqueeze(0)
    torch.testing.assert_close(m(long), batched, rtol=1e-12, atol=1e-12)
    right = torch.zeros(1, 5, 7, dtype=torch.int64)
    for j, n in enumerate(numbers):
        right[0, j, :len(nw.encode(n))] = torch.tensor(nw.encode(n))
    torch.testing.assert_close(m(right), batched, rtol=1e-12, atol=1e-12)
    # The pad ids matter only through the mask: without it the state would move on pad steps.
    assert not torch.allclose(m.states(long)[:, 0, 0], m.states(long)[:, 0, -1])


def test_seeds_are_independent():
    m = model("nalu", S=3)
    tokens, targets = nw.tensors(range(0, 1000, 37))
    before = m(tokens).detach().clone()
    with torch.no_grad():
        for p in m.parameters():
            p[1].add_(0.5 * torch.randn(p[1].shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    after = m(tokens)
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.allclose(after[1], before[1])
    # Seed 0's loss has no gradient on the other seeds' parameters.
    m.zero_grad()
    (after[0] - targets[0]).pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad[1:].abs().max() == 0, name
        if "output" not in name and "embedding" not in name:
            assert p.grad[0].abs().max() > 0, name


def test_seed_i_starts_where_a_single_seed_model_from_its_generator_does():
    stacked = model("nac", S=3, seed0=10)
    for i in range(3):
        single = model("nac", S=1, seed0=10 + i)
        for (name, p), q in zip(stacked.named_parameters(), single.parameters()):
            assert torch.equal(p[i], q[0]), name


def test_running_estimates_end_with_the_prediction_and_follow_prefixes():
    m = model("nalu", S=2)
    numbers = [702, 5, 342]
    tokens, _ = nw.tensors(numbers)
    est = m.running_estimates(tokens)
    assert est.shape == (2, 3, 5)
    torch.testing.assert_close(est[:, :, -1], m(tokens)[..., 0], rtol=0, atol=0)
    assert torch.isnan(est[:, 1, :4]).all() and torch.isnan(est[:, 0, 0]).all() and not torch.isnan(est[:, 2]).any()
    # The estimate after k tokens is the prediction for the first k tokens on their own ("seven hundred" -> ...).
    ids = nw.encode(702)
    for k in range(1, len(ids) + 1):
        prefix = torch.tensor([[ids[:k]]])
        torch.testing.assert_close(est[:, 0, 5 - len(ids) + k - 1], m(prefix)[:, 0, 0], rtol=1e-12, atol=1e-12)
    fig = nw.figure3_estimates(m, [702, 5])
    assert fig[0]["words"] == ["seven", "hundred", "and", "two"]
    assert np.allclose(np.array(fig[0]["estimates"]), est[:, 0, 1:].detach().numpy())
    assert np.array(fig[1]["estimates"]).shape == (2, 1)


@pytest.mark.parametrize("output", nalm.list_units())
def test_every_registered_unit_is_an_output_layer(output):
    m = model(output, S=2, dtype=torch.float32)
    y = m(nw.tensors([1, 250, 999])[0])
    assert y.shape == (2, 3, 1) and y.dtype == torch.float32
    assert m.output.unit_name == output and m.output.in_features == 6


def test_linear_output_is_affine():
    assert model("linear").output.b is not None
    assert model("linear", bias=False).output.b is None


def test_bad_inputs_and_options():
    m = model("nac", S=2)
    tokens, _ = nw.tensors([5, 6])
    with pytest.raises(ShapeError, match="int64"):
        m(tokens.float())
    with pytest.raises(ShapeError):
        m(tokens.expand(3, -1, -1))
    with pytest.raises(ShapeError, match="token ids"):
        m(torch.full((1, 1, 5), 31))
    with pytest.raises(ConfigError, match="unknown output unit"):
        nw.NumberWordsModel("lstm", num_seeds=2)
    with pytest.raises(ConfigError):
        nw.NumberWordsModel("nalu", num_seeds=0)
    with pytest.raises(ConfigError, match="hidden_size"):
        nw.NumberWordsConfig(hidden_size=0)
    cfg = nw.NumberWordsConfig(embedding_size=8, hidden_size=4, output_options={"eps": 1e-5})
    built = nw.NumberWordsModel.from_config(cfg, "nalu", 2)
    assert built.output.eps == 1e-5 and built.embedding.weight.shape == (2, 31, 8)


# -- metrics and learning -----------------------------------------------------------------------------------------
def test_mean_absolute_error_per_seed():
    tokens, targets = nw.tensors([0, 10, 500])

    def constant(tokens):  # seed s answers s for every number
        return torch.arange(2, dtype=torch.float32).view(2, 1, 1).expand(2, tokens.shape[1], 1)

    mae = nw.mean_absolute_error(constant, tokens, targets)
    assert mae.dtype == torch.float64 and mae.tolist() == [510 / 3, (1 + 9 + 499) / 3]
    errors = nw.split_errors(model("linear", S=2), nw.evaluation_sets(0))
    assert set(errors) == {"train_mae", "validation_mae", "test_mae"}
    assert all(e.shape == (2,) and torch.isfinite(e).all() for e in errors.values())


def test_a_short_training_run_reduces_the_training_error():
    m = nw.NumberWordsModel("nalu", num_seeds=2)  # the paper's sizes: embedding 256, LSTM 10
    m.reset_parameters(torch_generators(range(2), "init"))
    tokens, targets = nw.evaluation_sets(0)["train"]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    start = nw.mean_absolute_error(m, tokens, targets)
    for _ in range(100):
        opt.zero_grad()
        (m(tokens) - targets).pow(2).mean(dim=(1, 2)).sum().backward()
        opt.step()
    end = nw.mean_absolute_error(m, tokens, targets)
    assert math.isfinite(end.max()) and (end < 0.8 * start).all(), (start, end)
