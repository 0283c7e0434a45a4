"""The experiments that ship with nalm: one package each, in the order of the paper.

The engine never imports this package. It is found like any outside plug-in, through the ``nalm.experiments``
entry-point group (nalm's own ``pyproject.toml`` names it), and importing it registers every built-in experiment.
The packages never import one another (an import-linter contract in ``pyproject.toml``): what two of them need lives
in :mod:`nalm.nn` or :mod:`nalm.engine`.

- :mod:`~nalm.experiments.identity`: Figure 1, MLPs that fail to extrapolate the identity.
- :mod:`~nalm.experiments.arithmetic`: Table 1, static and recurrent arithmetic (``arithmetic``,
  ``arithmetic-recurrent``).
- :mod:`~nalm.experiments.single_module`: the NALM Primer's single-module benchmark (``single-module``; not in the
  paper: every unit on nine ranges).
- :mod:`~nalm.experiments.mnist`: Table 2 (``mnist-count``, ``mnist-sum``) and Table 4 (``mnist-parity``), with
  the offline MNIST loader they share.
- :mod:`~nalm.experiments.number_words`: Table 3 and Figure 3.
- :mod:`~nalm.experiments.programs`: Figures 4 and 6 (``program-add``, ``program-eval``).
- :mod:`~nalm.experiments.gridworld`: Figure 5, the time-tracking grid world (needs ``nalm[rl]`` to run).
"""

from __future__ import annotations

import importlib

#: The modules that register the built-in experiments, in the order of the paper (the report's order).
BUILTIN = ("identity.experiment", "arithmetic.experiment", "single_module.experiment", "mnist.counting",
           "number_words.experiment", "programs.experiment", "gridworld.experiment", "mnist.parity")

for _module in BUILTIN:
    importlib.import_module(f"{__name__}.{_module}")
