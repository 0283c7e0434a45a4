"""MNIST counting / addition: targets, per-seed batches, fixed evaluation sets, metrics, the nets, feature reuse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mnist_fixtures import random_mnist_arrays
from torch import nn

from nalm.engine.task import seed_generators, torch_generators
from nalm.errors import ConfigError, ShapeError
from nalm.experiments.mnist.data import Mnist
from nalm.experiments.mnist.nets import (DIGIT_NETS, DigitSequenceModel, MnistNet2018, RNNCore, SeedLoop, SmallMnistNet,
                                         SoftmaxDigits, build_sequence_model, digit_net_factory, make_core)
from nalm.experiments.mnist.sequences import (MEAN, STD, MnistSequenceConfig, MnistSequenceTask, digit_accuracy,
                                              exact_share, final_outputs, mean_absolute_error, normalize,
                                              running_targets, sequence_positions)


@pytest.fixture(scope="module")
def mnist() -> Mnist:
    return Mnist(**random_mnist_arrays(200, 100, seed=0))


def small_config(**options) -> MnistSequenceConfig:
    base = dict(validation=40, validation_sequences=12, test_sequences=15, test_lengths="1,4,60")
    return MnistSequenceConfig(**{**base, **options})


def bitgens(seeds):
    return [g.bit_generator for g in seed_generators(seeds, "data")]


class Oracle(nn.Module):
    """Reads a fixture image's label from the place of its bright block: (*, 1, 28, 28) -> (*, 10) one-hot or
    (*, 1) the digit."""

    def __init__(self, outputs: int):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):
        blocks = torch.stack([x[..., 0, 2 + 8 * (d // 4):8 + 8 * (d // 4), 2 + 6 * (d % 4):8 + 6 * (d % 4)]
                              .mean(dim=(-1, -2)) for d in range(10)], dim=-1)
        digit = blocks.argmax(dim=-1)
        if self.outputs == 10:
            return nn.functional.one_hot(digit, 10).float()
        return digit.unsqueeze(-1).float()


def exact_nau_model(target: str, num_seeds: int) -> DigitSequenceModel:
    """The solved model: the oracle digit net and an NAU cell h_t = l_t + h_{t-1} (W = [I | I])."""
    k = 10 if target == "count" else 1
    model = DigitSequenceModel(SeedLoop(lambda: Oracle(k), num_seeds), make_core("nau", k, num_seeds=num_seeds))
    with torch.no_grad():
        model.core.cell.unit.weight.copy_(torch.cat([torch.eye(k), torch.eye(k)], dim=1).expand(num_seeds, k, 2 * k))
    return model


# -- targets and data -------------------------------------------------------------------------------------------------
def test_running_targets_by_hand():
    labels = torch.tensor([[3, 0, 7], [9, 9, 1]])
    assert running_targets(labels, "sum")[..., 0].tolist() == [[3, 3, 10], [9, 18, 19]]
    counts = running_targets(labels, "count")
    assert counts.shape == (2, 3, 10)
    expected = torch.zeros(3, 10)
    expected[0:, 3] = 1
    expected[1:, 0] = 1
    expected[2:, 7] = 1
    assert torch.equal(counts[0], expected)
    assert counts[1, -1, 9] == 2 and counts[1, -1, 1] == 1 and counts[1, -1].sum() == 3
    with pytest.raises(ConfigError, match="unknown target"):
        running_targets(labels, "product")


def test_normalize():
    images = torch.tensor([[[0, 255] * 14] * 28], dtype=torch.uint8)
    x = normalize(images)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    assert math.isclose(float(x[0, 0, 0, 0]), -MEAN / STD, rel_tol=1e-6)
    assert math.isclose(float(x[0, 0, 0, 1]), (1 - MEAN) / STD, rel_tol=1e-6)
    with pytest.raises(ShapeError):
        normalize(images.float())


def _pool_positions(task, x):
    """Recover each sampled image's position in the training pool from its bytes (random bytes are unique)."""
    bytes_ = torch.round((x[..., 0, :, :] * STD + MEAN) * 255).to(torch.uint8)  # (S, B, T, 28, 28)
    flat = task.train_images.reshape(len(task.train_images), -1)
    return (bytes_.reshape(-1, 1, 784) == flat.unsqueeze(0)).all(-1).int().argmax(-1).reshape(bytes_.shape[:3])


@pytest.mark.parametrize("target", ["sum", "count"])
def test_training_batches_are_per_seed_and_consistent(mnist, target):
    task = MnistSequenceTask(small_config(target=target), [0, 1, 2], mnist)
    x, y, buffer = task.sample(bitgens([0, 1, 2]), 5)
    k = 1 if target == "sum" else 10
    assert x.shape == (3, 5, 10, 1, 28, 28) and y.shape == (3, 5, 10, k) and x.dtype == torch.float32
    positions = _pool_positions(task, x)
    assert torch.equal(y, running_targets(task.train_labels[positions], target))
    # seed 1 draws from its own stream only: the same batch as a run of seed 1 alone
    x1, y1, _ = task.sample(bitgens([1]), 5)
    assert torch.equal(x1[0], x[1]) and torch.equal(y1[0], y[1])
    assert not torch.equal(x[0], x[1])
    # the buffer is reused (x is a view of it); the next batch of the same streams differs
    streams, first = bitgens([0, 1, 2]), x.clone()
    task.sample(streams, 5)
    x2, _, buffer2 = task.sample(streams, 5, buffer)
    assert buffer2 is buffer and x2.data_ptr() == buffer.data_ptr() and not torch.equal(x2, first)


def test_held_out_validation_and_test_pools(mnist):
    task = MnistSequenceTask(small_config(), [0, 1], mnist)
    train = {bytes(im.numpy()) for im in task.train_images}
    valid_images = task.pools["validation"][0]
    assert len(train) == 160 and len(valid_images) == 40
    assert not train & {bytes(im.numpy()) for im in valid_images}
    assert torch.equal(task.pools["test"][0], torch.tensor(mnist.test_images))


def test_evaluation_sets_fixed_balanced_and_shared(mnist):
    task = MnistSequenceTask(small_config(), [0, 1], mnist)
    sets = task.sets
    assert list(sets) == ["validation", "test1", "test4", "test60"]
    assert sets["validation"][0] == "validation" and sets["validation"][1].shape == (12, 10)
    pool, positions = sets["test60"]
    assert pool == "test" and positions.shape == (15, 60)
    counts = np.bincount(positions.ravel(), minlength=100)
    assert counts.max() - counts.min() <= 1  # 900 draws from 100 images: each used 9 times
    other = MnistSequenceTask(small_config(test_lengths="60"), [5, 6, 7], mnist)
    assert np.array_equal(other.sets["test60"][1], positions)  # independent of the seeds and of the other lengths
    moved = MnistSequenceTask(small_config(), [0, 1], mnist, evaluation_seed=1)
    assert not np.array_equal(moved.sets["test60"][1], positions)


def test_sequence_positions_cover_the_pool():
    p = sequence_positions(7, 3, 5, np.random.default_rng(0))  # 15 draws: two full permutations and one more
    assert p.shape == (5, 3)
    assert np.array_equal(np.sort(p.ravel()[:14]), np.repeat(np.arange(7), 2))


# -- metrics ----------------------------------------------------------------------------------------------------------
def test_metrics_by_hand():
    target = torch.tensor([[[2.0, 0.0], [1.0, 3.0]]])  # (1, N=2, k=2), shared by both seeds
    pred = torch.tensor([[[2.4, -0.3], [1.0, 3.0]],  # seed 0: both round right
                         [[2.6, 0.0], [1.0, 2.0]]])  # seed 1: both wrong
    assert torch.allclose(mean_absolute_error(pred, target), torch.tensor([0.7 / 4, 1.6 / 4], dtype=torch.float64))
    assert mean_absolute_error(pred, target).dtype == torch.float64
    assert exact_share(pred, target).tolist() == [1.0, 0.0]
    with pytest.raises(ShapeError):
        exact_share(pred, target[:, :1])


def test_digit_accuracy_by_hand():
    labels = torch.tensor([3, 0, 9])
    counts = torch.zeros(2, 3, 10)
    counts[0, 0, 3] = counts[0, 1, 0] = counts[0, 2, 9] = 0.9  # seed 0: all right
    counts[1, 0, 3] = counts[1, 1, 5] = counts[1, 2, 1] = 0.4  # seed 1: one right
    assert digit_accuracy(counts, labels).tolist() == [1.0, 1 / 3]
    sums = torch.tensor([[[3.2], [-0.7], [11.0]], [[2.4], [0.51], [8.6]]])  # clipped to 0..9 after rounding
    assert digit_accuracy(sums, labels).tolist() == [1.0, 1 / 3]
    with pytest.raises(ShapeError):
        digit_accuracy(sums, labels[:2])


@pytest.mark.parametrize("target", ["sum", "count"])
def test_solved_model_scores_perfectly_at_every_length(mnist, target):
    task = MnistSequenceTask(small_config(target=target), [0, 1], mnist)
    metrics = task.evaluate(exact_nau_model(target, 2), 2)
    for name in ("validation", "test1", "test4", "test60"):
        assert metrics[f"{name}_mae"].tolist() == [0.0, 0.0]
        assert metrics[f"{name}_exact"].tolist() == [1.0, 1.0]
    assert metrics["test1_digit_accuracy"].tolist() == [1.0, 1.0]
    assert all(v.dtype == torch.float64 and v.shape == (2,) for v in metrics.values())


def test_loss_on_every_step_or_the_last(mnist):
    out, y = torch.zeros(2, 3, 4, 1), torch.zeros(2, 3, 4, 1)
    y[0, :, -1] = 2.0
    y[1, :, 0] = 2.0
    every = MnistSequenceTask(small_config(), [0, 1], mnist).loss(out, y)
    last = MnistSequenceTask(small_config(loss_steps="last"), [0, 1], mnist).loss(out, y)
    assert every.tolist() == [1.0, 1.0] and last.tolist() == [4.0, 0.0]


# -- the nets ---------------------------------------------------------------------------------------------------------
def test_mnist_net_2018_layout():
    net = MnistNet2018(10)
    assert sum(p.numel() for p in net.parameters()) == 431_080  # 520 + 25,050 + 400,500 + 5,010
    assert [tuple(p.shape) for p in net.parameters()] == [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 800),
                                                          (500,), (10, 500), (10,)]
    x = torch.randn(2, 3, 1, 28, 28)
    assert net(x).shape == (2, 3, 10)
    assert torch.allclose(net(x)[1, 2], net(x[1, 2:3])[0], atol=1e-6)  # one image at a time
    assert SmallMnistNet(1)(x).shape == (2, 3, 1)
    with pytest.raises(ShapeError):
        net(torch.randn(2, 28, 28))
    with pytest.raises(ConfigError):
        digit_net_factory("resnet", 10)
    assert set(DIGIT_NETS) == {"mnist2018", "small"}


def test_seed_loop_copies_are_independent_and_reproducible():
    factory = digit_net_factory("small", 1)
    loop = SeedLoop(factory, 3, generators=torch_generators([0, 1, 2], "init"))
    single = SeedLoop(factory, 1, generators=torch_generators([1], "init"))
    before = torch.random.get_rng_state()
    loop.reset_parameters(torch_generators([0, 1, 2], "init"))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream is left as it was
    for a, b in zip(loop.copies[1].parameters(), single.copies[0].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(loop.copies[0].fc2.weight, loop.copies[1].fc2.weight)
    x = torch.randn(3, 4, 1, 28, 28)
    out = loop(x)
    assert out.shape == (3, 4, 1) and torch.equal(out[2], loop.copies[2](x[2]))
    with pytest.raises(ShapeError):
        loop(x[:2])


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_ensemble_digit_net_equals_seed_loop(mode):
    from nalm.nn.ensemble import Ensemble

    def model(ensemble):
        m = build_sequence_model("nau", 10, num_seeds=2, digit_net="small", ensemble=ensemble)
        m.reset_parameters(torch_generators([3, 4], "init"))
        return m

    stacked = model(lambda f, s: Ensemble(f, s, mode=mode))
    looped = model(lambda f, s: SeedLoop(f, s))
    assert all(p.shape[0] == 2 for p in stacked.parameters())  # every parameter carries the seed axis
    x = torch.randn(2, 3, 4, 1, 28, 28)
    assert torch.allclose(stacked(x), looped(x), atol=1e-5)
    assert isinstance(build_sequence_model("nau", 1, num_seeds=2, digit_net="small").digit_net, Ensemble)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn-tanh", "rnn-relu"])
def test_rnn_core_states_match_seed_rnn(kind):
    core = RNNCore(kind, 3, 5, 2, num_seeds=2)
    core.reset_parameters(torch_generators([0, 1], "init"))
    xs = torch.randn(2, 4, 6, 3)
    states = core.states(xs)
    assert states.shape == (2, 4, 6, 5)
    assert torch.allclose(states[:, :, -1], core.rnn(xs), atol=1e-6)
    assert torch.allclose(states[:, :, 2], core.rnn(xs[:, :, :3]), atol=1e-6)  # every step is the prefix's state
    assert core(xs).shape == (2, 4, 6, 2)


def test_make_core_and_model_options():
    assert make_core("nau", 10, num_seeds=2).cell.unit.weight.shape == (2, 10, 20)
    with pytest.raises(ConfigError, match="unknown recurrent core"):
        make_core("transformer", 10, num_seeds=2)
    model = build_sequence_model("lstm", 1, num_seeds=2, digit_net="small", hidden_size=7, core_learning_rate=1e-2)
    groups = model.parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ShapeError):
        model(torch.randn(2, 3, 1, 28, 28))
    with pytest.raises(ConfigError):
        MnistSequenceConfig(target="product")
    with pytest.raises(ConfigError):
        MnistSequenceConfig(test_lengths="1,0")
    with pytest.raises(ConfigError):
        MnistSequenceConfig(loss_steps="first")


# -- feature reuse ----------------------------------------------------------------------------------------------------
class CountingLoop(SeedLoop):
    """SeedLoop that counts the images its copies see."""

    seen = 0

    def forward(self, x):
        self.seen += x.shape[0] * x.shape[1]
        return super().forward(x)


# (not NALU at random init: its log-exp recurrence amplifies float64 rounding chaotically over 60 steps)
@pytest.mark.parametrize("core", ["lstm", "nau", "nac"])
def test_feature_reuse_equals_the_full_model(mnist, core):
    S = 2
    task = MnistSequenceTask(small_config(target="count"), [0, 1], mnist)
    model = build_sequence_model(core, 10, num_seeds=S, digit_net="small",
                                 ensemble=lambda f, s: CountingLoop(f, s))
    model.reset_parameters(torch_generators([0, 1], "init"))
    model.double()
    images = task.pools["test"][0]
    sets = {n: pos for n, (pool, pos) in task.sets.items() if pool == "test"}
    reused = final_outputs(model, images, sets, S, image_chunk=37, max_elements=5000)  # small chunks on purpose
    assert model.digit_net.seen == S * len(np.unique(np.concatenate([p.ravel() for p in sets.values()])))
    for name, positions in sets.items():
        x = normalize(images[torch.from_numpy(positions)]).double().expand(S, *positions.shape, 1, 28, 28)
        with torch.no_grad():
            full = model(x)[:, :, -1]  # (S, N, k)
        assert reused[name].shape == full.shape
        assert torch.allclose(reused[name], full, rtol=1e-9, atol=1e-9), name


def test_trainer_runs_the_task(mnist):
    from nalm.engine.train import TrainConfig, train

    task = MnistSequenceTask(small_config(), [0, 1], mnist)
    model = build_sequence_model("nau", 1, num_seeds=2, digit_net="small", core_learning_rate=1e-2)
    result = train(model, task, TrainConfig(iterations=4, batch_size=3, eval_every=2, seeds=2))
    assert len(result.records) == 2 and {r["step"] for r in result.curves} == {0, 2, 4}
    assert all(math.isfinite(r["test60_mae"]) for r in result.records)


def test_recurrent_identity_init_and_wider_digit_outputs():
    gens = lambda: torch_generators([0, 1], "init")  # noqa: E731
    plain = make_core("nau", 1, num_seeds=2, input_size=10)
    ident = make_core("nau", 1, num_seeds=2, input_size=10, recurrent_init="identity")
    plain.reset_parameters(gens())
    ident.reset_parameters(gens())
    w, v = plain.cell.unit.weight, ident.cell.unit.weight
    assert w.shape == (2, 1, 11) and torch.equal(v[..., :10], w[..., :10])  # A: the same draws
    assert torch.equal(v[..., 10:], torch.ones(2, 1, 1)) and not torch.equal(w[..., 10:], v[..., 10:])
    xs = torch.rand(2, 3, 5, 10)
    expected = torch.einsum("sbti,soi->sbo", xs, v[..., :10])  # h_T = Σ_t A x_t: an exact accumulator
    assert torch.allclose(ident(xs)[:, :, -1], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="weight"):
        make_core("nac", 10, num_seeds=2, recurrent_init="identity")  # W = tanh(Ŵ)σ(M̂) is never exactly 1
    with pytest.raises(ConfigError):
        make_core("lstm", 10, num_seeds=2, recurrent_init="identity")
    with pytest.raises(ConfigError):
        make_core("nau", 10, num_seeds=2, recurrent_init="zeros")
    model = build_sequence_model("nau", 1, num_seeds=2, digit_net="small", digit_outputs=10, recurrent_init="identity")
    model.reset_parameters(gens())
    assert model(torch.randn(2, 3, 4, 1, 28, 28)).shape == (2, 3, 4, 1)
    assert model.recurrent_weights() == [{"recurrent_weight": 1.0, "recurrent_offdiagonal": 0.0}] * 2
    lstm = build_sequence_model("lstm", 1, num_seeds=2, digit_net="small", digit_outputs=10)
    assert lstm.core.rnn.weight_ih.shape[-1] == 10 and lstm(torch.randn(2, 1, 3, 1, 28, 28)).shape == (2, 1, 3, 1)


def test_softmax_head_and_accumulator_init():
    logits = torch.randn(2, 5, 10)
    p = torch.softmax(logits, dim=-1)
    assert torch.allclose(SoftmaxDigits(1)(logits)[..., 0], (p * torch.arange(10.0)).sum(-1))
    assert torch.allclose(SoftmaxDigits(10)(logits), p)
    sure = torch.full((1, 10), -30.0)
    sure[0, 7] = 30.0
    assert SoftmaxDigits(1)(sure).item() == pytest.approx(7.0)
    with pytest.raises(ConfigError):
        SoftmaxDigits(3)
    with pytest.raises(ShapeError, match="10 logits"):
        SoftmaxDigits(1)(torch.randn(2, 9))
    images = torch.randn(2, 3, 4, 1, 28, 28)
    for k in (1, 10):  # the sum reads the expected digit, counting the 10 probabilities; both start as accumulators
        model = build_sequence_model("nau", k, num_seeds=2, digit_net="small", digit_head="softmax",
                                     recurrent_init="accumulator")
        model.reset_parameters(torch_generators([0, 1], "init"))
        assert model.digit_net(images.reshape(2, 12, 1, 28, 28)).shape == (2, 12, 10)
        feats = model.features(images.reshape(2, 12, 1, 28, 28))
        assert feats.shape == (2, 12, k) and (feats >= 0).all() and (feats <= 9).all()
        if k == 10:
            assert torch.allclose(feats.sum(-1), torch.ones(2, 12))
        w = model.core.cell.unit.weight  # [A | B] = [I | I]
        assert torch.equal(w, torch.cat([torch.eye(k), torch.eye(k)], dim=-1).expand(2, k, 2 * k))
        assert torch.allclose(model(images), feats.reshape(2, 3, 4, k).cumsum(dim=2), atol=1e-5)
    with pytest.raises(ConfigError, match="digit_outputs"):
        build_sequence_model("nau", 1, num_seeds=1, digit_net="small", digit_head="softmax", digit_outputs=10)
    with pytest.raises(ConfigError, match="digit head"):
        build_sequence_model("nau", 1, num_seeds=1, digit_net="small", digit_head="sigmoid")
    with pytest.raises(ConfigError, match="as many inputs"):
        make_core("nau", 1, num_seeds=1, input_size=10, recurrent_init="accumulator")
    with pytest.raises(ConfigError, match="weight is a parameter"):  # a NAC's weight is computed, never set
        make_core("nac", 10, num_seeds=1, recurrent_init="accumulator")


def test_bench_mnist_rows_and_errors(capsys):
    """``nalm bench mnist``: every batching measured once on a tiny synthetic pool (no timing is asserted)."""
    from nalm.cli import main
    from nalm.experiments.mnist.bench import mnist_rows

    rows = mnist_rows(["small"], batch=1, steps=1, repeat=1, pool=(400, 100))
    assert [r["batching"] for r in rows] == ["trainer S=1", "trainer S=10, Ensemble loop", "trainer S=10, Ensemble vmap",
                                             "trainer S=10, SeedLoop", "one-model loop, 10 models",
                                             "evaluation, S=1 (forward of each pool image)"]
    assert all(r["net"] == "small" and r["images_per_cpu_s"] > 0 and r["cpu_ms_per_step"] > 0 for r in rows)
    with pytest.raises(ConfigError, match="resnet"):
        mnist_rows(["resnet"])
    assert main(["bench", "mnist", "--nets", "small", "--steps", "0"]) == 2
    assert "positive" in capsys.readouterr().err
