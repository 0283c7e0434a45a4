"""Experiments as plug-ins (see :mod:`nalm.experiments.base`), the registry, and one run end to end.

Importing this package registers the built-in experiments, then the plug-ins named by the ``nalm.experiments``
entry-point group of installed packages and by the ``NALM_EXPERIMENTS`` environment variable (comma-separated
module names): importing a module is all it takes, since the module registers its experiment itself.
"""

from __future__ import annotations

import importlib
import os

from ..errors import ConfigError
from .base import (NOT_REPRODUCED, NOT_RUN, PROFILES, REPRODUCED, Claim, Experiment, ReportContext, RunSpec,
                   Verdict, get_experiment, list_experiments, make_config, register_experiment,
                   unregister_experiment)
from .runner import Busy, resolve_device, run, set_threads

#: The experiments that ship with nalm, in the order of the paper; each module registers itself on import.
BUILTIN = ("identity", "arithmetic", "mnist_sequences", "number_words", "programs", "gridworld", "mnist_parity")

__all__ = ["Experiment", "Claim", "Verdict", "ReportContext", "RunSpec", "register_experiment", "get_experiment",
           "list_experiments", "unregister_experiment", "make_config", "run", "Busy", "set_threads",
           "resolve_device", "load_plugins", "REPRODUCED", "NOT_REPRODUCED", "NOT_RUN", "PROFILES"]


def load_plugins() -> None:
    """Import the experiment modules of the ``nalm.experiments`` entry points and of ``$NALM_EXPERIMENTS``."""
    from importlib.metadata import entry_points

    names = [ep.value.split(":")[0] for ep in entry_points(group="nalm.experiments")]
    names += [n.strip() for n in os.environ.get("NALM_EXPERIMENTS", "").split(",") if n.strip()]
    for module in names:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"cannot import experiment plug-in {module!r} (from NALM_EXPERIMENTS or an entry "
                              f"point): {e}") from None


for _name in BUILTIN:
    importlib.import_module(f"{__name__}.{_name}")
load_plugins()
