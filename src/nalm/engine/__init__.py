"""The engine: what runs any experiment and knows none of them.

Plug-in authors import from here: the experiment protocol and registry (:mod:`.experiment`), the task protocol
(:mod:`.task`), the trainer (:mod:`.train`) and one run end to end (:mod:`.runner`). The rest of the engine: the
results database (:mod:`.store`), ``nalm reproduce`` (:mod:`.reproduce`), its ETA (:mod:`.calibration`) and its
executors (:mod:`.executors`), the report (:mod:`.report`) and its building blocks (:mod:`.reporting`), generic
metrics (:mod:`.metrics`), input ranges (:mod:`.ranges`), progress bars and TensorBoard writers (:mod:`.progress`).
"""

from .experiment import (NOT_REPRODUCED, NOT_RUN, PROFILES, REPRODUCED, Claim, Experiment, ReportContext, RunSpec,
                         Verdict, get_experiment, list_experiments, load_plugins, make_config, register_experiment,
                         unregister_experiment)
from .runner import Busy, resolve_device, run, set_threads
from .task import Task
from .train import TrainConfig, TrainResult

__all__ = ["Experiment", "Claim", "Verdict", "ReportContext", "RunSpec", "Task", "TrainConfig", "TrainResult",
           "register_experiment", "get_experiment", "list_experiments", "unregister_experiment", "load_plugins",
           "make_config", "run", "Busy", "set_threads", "resolve_device", "REPRODUCED", "NOT_REPRODUCED", "NOT_RUN",
           "PROFILES"]
