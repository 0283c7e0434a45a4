"""Data sets that nalm reads from files: MNIST (offline, verified; see :mod:`nalm.data.mnist`)."""

from .mnist import Mnist, load_mnist, split_train

__all__ = ["Mnist", "load_mnist", "split_train"]
