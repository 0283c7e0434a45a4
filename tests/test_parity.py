"""MNIST parity canvases (nalm.experiments.mnist.parity_task) and the ablated counting network (nalm.experiments.mnist.parity_nets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nalm
from nalm import functional as F
from nalm.errors import ConfigError, ShapeError
from nalm.experiments.mnist.parity_nets import FINAL_LAYERS, AblationLinear, ParityNet, make_final_layer
from nalm.experiments.mnist.parity_task import (CanvasMeta, ParityConfig, make_canvases, make_splits, parity_targets,
                                                reference_accuracies, render_grid)

SMALL = ParityConfig(canvas_size=40, digit_size=8, max_digits=4, min_distance=10.0, train_size=50,
                     validation_size=30, test_size=40, held_out_digits=20)


def pool(n=60, size=8, seed=0, value=None):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8) if value is None \
        else np.full((n, size, size), value, dtype=np.uint8)
    return images, rng.integers(0, 10, n)


def naive_render(images, meta: CanvasMeta, size):
    """The canvases drawn one digit at a time in int64, then clipped: the reference for make_canvases."""
    out = np.zeros((len(meta), size, size), dtype=np.int64)
    d = meta.digit_size
    for i in range(len(meta)):
        for j in range(int(meta.counts[i])):
            r, c = meta.positions[i, j]
            out[i, r:r + d, c:c + d] += images[meta.sources[i, j]]
    return np.minimum(out, 255).astype(np.uint8)


# -- canvases ---------------------------------------------------------------------------------------------------
def test_canvases_follow_the_rules():
    images, labels = pool()
    canvases, targets, meta = make_canvases(images, labels, 500, np.random.default_rng(1), SMALL)
    assert canvases.shape == (500, 40, 40) and canvases.dtype == np.uint8
    assert targets.shape == (500,) and targets.dtype == np.int64
    counts = meta.counts
    assert counts.min() == 0 and counts.max() == 4  # every count in range occurs, nothing beyond
    # digits lie wholly inside the canvas; empty slots are -1 everywhere
    filled = meta.labels >= 0
    assert ((meta.positions >= 0) & (meta.positions <= 40 - 8)).all(axis=-1)[filled].all()
    assert (meta.positions[~filled] == -1).all() and (meta.sources[~filled] == -1).all()
    assert (np.arange(4) < counts[:, None]).tolist() == filled.tolist()  # digits fill the first slots
    # labels come from the pool; target = number of even digits
    assert (meta.labels[filled] == labels[meta.sources[filled]]).all()
    assert targets.tolist() == [sum(1 for lab, _ in meta.digits(i) if lab % 2 == 0) for i in range(500)]
    # pairwise centre distance >= min_distance
    centres = meta.centres
    for i in range(500):
        c = centres[i, :counts[i]]
        for a in range(len(c)):
            for b in range(a + 1, len(c)):
                assert math.dist(c[a], c[b]) >= 10.0
    # the pixels are the clipped sums of the placed digits
    assert np.array_equal(canvases, naive_render(images, meta, 40))


def test_overlapping_digits_are_summed_and_clipped():
    images, labels = pool(value=200)
    cfg = ParityConfig(canvas_size=12, digit_size=8, min_digits=2, max_digits=2, min_distance=0.0)
    canvases, _, meta = make_canvases(images, labels, 50, np.random.default_rng(3), cfg)
    overlap = np.zeros((50, 12, 12), dtype=int)
    for i in range(50):
        for r, c in meta.positions[i]:
            overlap[i, r:r + 8, c:c + 8] += 1
    assert (overlap == 2).any()  # on a 12 px canvas two 8 px digits always overlap
    assert (canvases[overlap == 2] == 255).all()  # 400 clipped, not wrapped to 144
    assert (canvases[overlap == 1] == 200).all() and (canvases[overlap == 0] == 0).all()


def test_counts_are_uniform():
    images, labels = pool()
    _, _, meta = make_canvases(images, labels, 5000, np.random.default_rng(5), SMALL)
    freq = np.bincount(meta.counts, minlength=5) / 5000
    assert np.abs(freq - 0.2).max() < 0.03  # binomial sd ≈ 0.0057


def test_parity_targets():
    labels = np.array([[3, 8, 4, -1, -1], [-1, -1, -1, -1, -1], [0, 2, 6, 8, 1], [1, 3, 5, 7, 9]])
    assert parity_targets(labels).tolist() == [2, 0, 4, 0]


def test_canvases_are_deterministic():
    images, labels = pool()
    a = make_canvases(images, labels, 64, np.random.default_rng(7), SMALL)
    b = make_canvases(images, labels, 64, np.random.default_rng(7), SMALL)
    c = make_canvases(images, labels, 64, np.random.default_rng(8), SMALL)
    assert np.array_equal(a.canvases, b.canvases) and np.array_equal(a.targets, b.targets)
    assert np.array_equal(a.meta.positions, b.meta.positions) and np.array_equal(a.meta.sources, b.meta.sources)
    assert not np.array_equal(a.canvases, c.canvases)


def test_default_geometry_is_mnist_sized():
    images, labels = pool(size=28)
    canvases, targets, meta = make_canvases(images, labels, 200, np.random.default_rng(0))
    assert canvases.shape == (200, 100, 100) and targets.max() <= 5 and meta.counts.max() == 5
    d = meta.centres[:, :, None, :] - meta.centres[:, None, :, :]
    dist = np.sqrt((d ** 2).sum(-1))
    off_diagonal = ~np.eye(5, dtype=bool) & ~np.isnan(dist)
    assert (dist[off_diagonal] >= 20).all()


def test_splits_hold_out_validation_digits():
    n = 100
    images = np.zeros((n, 8, 8), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)  # each image names its own index
    labels = np.arange(n) % 10
    test_images = np.full((30, 8, 8), 255, dtype=np.uint8)
    test_labels = np.zeros(30, dtype=np.int64)
    splits = make_splits(images, labels, test_images, test_labels, SMALL, seed=3)
    assert {k: len(v.targets) for k, v in splits.items()} == {"train": 50, "validation": 30, "test": 40}

    def used(split):  # the MNIST-train indices of the digits on a split's canvases
        meta = split.meta
        return {int(split.canvases[i, r, c]) for i in range(len(meta))
                for (r, c), s in zip(meta.positions[i], meta.sources[i]) if s >= 0}

    train, validation = used(splits["train"]), used(splits["validation"])
    assert train and validation and not train & validation
    assert len(validation) <= SMALL.held_out_digits and len(train | validation) <= n
    assert splits["test"].canvases.max() == 255  # test canvases come from the test pool
    again = make_splits(images, labels, test_images, test_labels, SMALL, seed=3, splits=("validation",))
    assert list(again) == ["validation"]
    assert np.array_equal(again["validation"].canvases, splits["validation"].canvases)


@pytest.mark.parametrize("options", [
    dict(canvas_size=40, digit_size=28, max_digits=2, min_distance=20.0),  # centres range over 13 px only
    dict(canvas_size=100, max_digits=5, min_distance=80.0),
    dict(canvas_size=100, max_digits=30, min_distance=20.0),  # more than fit (Oler's bound)
    dict(canvas_size=20),  # smaller than a digit
    dict(min_digits=6),
    dict(min_distance=-1.0),
    dict(max_digits=0),
    dict(max_tries=0),
])
def test_impossible_configurations(options):
    with pytest.raises(ConfigError):
        ParityConfig(**options)


def test_too_crowded_canvas_fails_after_max_tries():
    # Four digits 20 px apart on a 20 px range of positions fit only at the four corners: possible, but rejection
    # sampling essentially never finds it.
    cfg = ParityConfig(canvas_size=28, digit_size=8, min_digits=4, max_digits=4, min_distance=20.0, max_tries=50)
    images, labels = pool()
    with pytest.raises(ConfigError, match="too crowded"):
        make_canvases(images, labels, 10, np.random.default_rng(0), cfg)


def test_bad_pools():
    images, labels = pool()
    rng = np.random.default_rng(0)
    with pytest.raises(ShapeError):
        make_canvases(images.astype(np.float32), labels, 4, rng, SMALL)
    with pytest.raises(ShapeError):
        make_canvases(images[:, :6, :6], labels, 4, rng, SMALL)
    with pytest.raises(ShapeError):
        make_canvases(images, labels[:-1], 4, rng, SMALL)
    with pytest.raises(ShapeError):
        make_canvases(images, labels + 10, 4, rng, SMALL)
    with pytest.raises(ConfigError):
        make_canvases(images, labels, -1, rng, SMALL)


def test_reference_accuracies():
    targets = np.array([0, 0, 1, 2])
    ref = reference_accuracies(targets, 3)
    assert ref == pytest.approx({"majority": 0.5, "uniform": 1 / 3, "prior": 0.25 + 0.0625 + 0.0625})
    # the majority class comes from the training targets when given
    ref = reference_accuracies(targets, 3, train_targets=np.array([2, 2, 1]))
    assert ref["majority"] == pytest.approx(0.25)
    assert ref["prior"] == pytest.approx(0.5 * 0 + 0.25 / 3 + 0.25 * 2 / 3)
    with pytest.raises(ShapeError):
        reference_accuracies(np.array([0, 3]), 3)
    with pytest.raises(ShapeError):
        reference_accuracies(np.array([], dtype=np.int64), 3)


def test_render_grid(tmp_path):
    from matplotlib.image import imread

    images, labels = pool()
    canvases, targets, meta = make_canvases(images, labels, 6, np.random.default_rng(0), SMALL)
    path = render_grid(tmp_path / "grid.png", canvases, targets, meta=meta, predictions=targets, columns=3,
                       title="parity")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[1] > pixels.shape[0]  # 3 columns × 2 rows: wider than tall
    with pytest.raises(ShapeError):
        render_grid(tmp_path / "bad.png", canvases, targets[:-1])


# -- final layers -----------------------------------------------------------------------------------------------
def _set(module, **values):
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(torch.as_tensor(value, dtype=torch.float32))


W_HAT = [[0.5, -1.0, 2.0], [0.0, 1.5, -0.3]]
M_HAT = [[1.0, 0.0, -2.0], [3.0, -1.0, 0.5]]
H = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]])


@pytest.mark.parametrize("kind", ["affine", "affine-nobias", "tanh", "sigmoid", "nac"])
def test_ablation_layer_formulas(kind):
    layer = AblationLinear(kind, 3, 2)
    w_hat, m_hat = torch.tensor(W_HAT), torch.tensor(M_HAT)
    bias = torch.tensor([0.25, -0.75])
    if kind == "affine":
        _set(layer, weight=W_HAT, bias=bias)
        expected = H @ w_hat.T + bias
    elif kind == "affine-nobias":
        _set(layer, weight=W_HAT)
        expected = H @ w_hat.T
    elif kind == "tanh":
        _set(layer, W_hat=W_HAT)
        expected = H @ torch.tanh(w_hat).T
    elif kind == "sigmoid":
        _set(layer, M_hat=M_HAT)
        expected = H @ torch.sigmoid(m_hat).T
    else:
        _set(layer, W_hat=W_HAT, M_hat=M_HAT)
        expected = H @ (torch.tanh(w_hat) * torch.sigmoid(m_hat)).T
        nac = nalm.get_unit("nac", 3, 2)  # the library's NAC computes the same
        _set(nac, W_hat=W_HAT, M_hat=M_HAT)
        torch.testing.assert_close(nac(H), expected)
    torch.testing.assert_close(layer(H), expected)
    names = {n for n, _ in layer.named_parameters()}
    assert ("bias" in names) == (kind == "affine")


def test_nau_and_nalu_finals():
    nau = make_final_layer("nau", 3, 2)
    _set(nau, weight=[[1.5, -0.5, 0.0], [1.0, 1.0, -2.0]])
    torch.testing.assert_close(nau(H), H @ torch.tensor([[1.5, -0.5, 0.0], [1.0, 1.0, -2.0]]).T)
    nau.post_step()
    assert nau.weight.tolist() == [[1.0, -0.5, 0.0], [1.0, 1.0, -1.0]]

    nalu = make_final_layer("nalu", 3, 2)
    g_raw = [[0.3, -0.2, 0.1], [-1.0, 0.5, 0.0]]
    _set(nalu, W_hat=W_HAT, M_hat=M_HAT, G=g_raw)
    w = torch.tanh(torch.tensor(W_HAT)) * torch.sigmoid(torch.tensor(M_HAT))
    g = torch.sigmoid(H @ torch.tensor(g_raw).T)
    expected = g * (H @ w.T) + (1 - g) * torch.exp(torch.log(H.abs() + nalu.eps) @ w.T)
    torch.testing.assert_close(nalu(H), expected)


def test_final_layer_errors():
    with pytest.raises(ConfigError):
        make_final_layer("relu", 3, 2)
    with pytest.raises(ConfigError):
        AblationLinear("nau", 3, 2)
    with pytest.raises(ConfigError):
        ParityNet("softmax")
    with pytest.raises(ConfigError):
        ParityNet("affine", canvas_size=0)


# -- the network ------------------------------------------------------------------------------------------------
def test_only_the_final_layer_differs_between_rows():
    nets = {f: ParityNet(f, canvas_size=32, generator=torch.Generator().manual_seed(4)) for f in FINAL_LAYERS}
    x = torch.randint(0, 256, (5, 32, 32), dtype=torch.uint8)
    reference = nets["affine"]
    for final, net in nets.items():
        body = {k: v for k, v in net.state_dict().items() if not k.startswith("final.")}
        assert body.keys() == {k for k in reference.state_dict() if not k.startswith("final.")}
        for k, v in body.items():
            assert torch.equal(v, reference.state_dict()[k]), (final, k)
        torch.testing.assert_close(net.features(x), reference.features(x))
        out = net(x)
        assert out.shape == (5, 6) and torch.isfinite(out).all()
        torch.testing.assert_close(out, net.final(net.features(x)))


def test_network_input_forms_and_shapes():
    net = ParityNet("nac", canvas_size=32, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    scaled = x.float() / 255
    torch.testing.assert_close(net(x), net(scaled))
    torch.testing.assert_close(net(x), net(scaled.unsqueeze(1)))
    with pytest.raises(ShapeError):
        net(torch.zeros(3, 28, 28))
    with pytest.raises(ShapeError):
        net(torch.zeros(3, 2, 32, 32))


def test_initialisation_is_explicit():
    state = torch.random.get_rng_state()
    a = ParityNet("nac", canvas_size=32, generator=torch.Generator().manual_seed(1))
    b = ParityNet("nac", canvas_size=32, generator=torch.Generator().manual_seed(1))
    c = ParityNet("nac", canvas_size=32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator was not touched
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert not torch.equal(a.conv1.weight, c.conv1.weight) and not torch.equal(a.final.W_hat, c.final.W_hat)
    a.reset_parameters(torch.Generator().manual_seed(2))
    for (k, v), w in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(v, w), k


def test_training_hooks():
    nau = ParityNet("nau", canvas_size=32)
    with torch.no_grad():
        nau.final.weight.fill_(3.0)
    assert nau.regularization_loss().item() == pytest.approx(F.nau_sparsity(nau.final.weight).item())
    nau.post_step()
    assert nau.final.weight.max().item() == 1.0
    affine = ParityNet("affine", canvas_size=32)
    affine.post_step()  # nothing to do, and no error
    assert affine.regularization_loss().item() == 0.0


def test_the_network_learns_a_tiny_canvas_set():
    cfg = ParityConfig(canvas_size=32, digit_size=8, max_digits=3, min_distance=8.0)
    images, labels = pool(n=40, seed=1)
    canvases, targets, _ = make_canvases(images, labels, 32, np.random.default_rng(2), cfg)
    x, y = torch.from_numpy(canvases), torch.from_numpy(targets)
    net = ParityNet("nac", canvas_size=32, num_classes=cfg.num_classes, map_channels=4,
                    generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("final", list(FINAL_LAYERS))
def test_seeds_run_as_one_vmapped_program(final):
    """How an ensemble runs S seeds of the net: vmap of functional_call over stacked parameters."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    nets = [ParityNet(final, canvas_size=32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    x = torch.randint(0, 256, (3, 4, 32, 32), dtype=torch.uint8)  # (S, B, H, W)
    out = vmap(lambda p, b, xs: functional_call(base, (p, b), (xs,)))(params, buffers, x)  # (S, B, 6)
    # NALU's exp path gives logits near 10⁶ at initialisation: vmap's batched kernels round them differently.
    torch.testing.assert_close(out, torch.stack([net(x[i]) for i, net in enumerate(nets)]), rtol=1e-5, atol=1e-5)
