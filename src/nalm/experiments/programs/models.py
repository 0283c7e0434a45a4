"""Sequence regressors with a seed axis for program evaluation (Trask et al. 2018, §4.4, Fig. 4 and 6).

Every model maps a sequence (S or 1, B, T, F) to one prediction per sequence (S, B, 1), read at the final step,
holds S independent copies of its parameters (nothing is computed across seeds) and initialises seed i from
``generators[i]`` alone via ``reset_parameters(generators)``.

Padding: with ``pad_channel`` set, a step whose input has a 1 in that channel is a pad step: every state passes
through it unchanged. Programs are left-padded (:mod:`nalm.experiments.programs.task`), so pad steps come first, the state
is still the initial one at a program's first real token, and a prediction does not depend on how much padding
the batch needed. ``forward(x, mask)`` takes an explicit (S or 1, B, T) mask (True = real step) instead.

Models (``build_sequence_model``):

- ``ugrnn``: the update-gate RNN of Collins, Sohl-Dickstein & Sussillo (ICLR 2017), linear read-out.
- ``lstm``: the LSTM of :class:`nalm.nn.models.SeedRNN` (its parameters and initialisation), linear read-out.
- ``dnc``: the Differentiable Neural Computer of Graves et al. (Nature 2016) with an LSTM controller.
- ``lstm-nalu``: the paper's model, a NALU "configured by" an LSTM (see :class:`HyperNALU`); ``lstm-nau`` and
  ``lstm-nau-nmu`` put Madsen & Johansen's (ICLR 2020) NAU, or an NAU and an NMU, in its place.
"""

from __future__ import annotations

from nalm.errors import ConfigError
from nalm.units.base import Generators

from .dnc import DNC, allocation_weights, content_weights, directional_weights, update_links, update_usage, write_memory
from .rnn import UGRNN, HyperNALU, LSTMRegressor, SequenceRegressor

__all__ = ["SequenceRegressor", "UGRNN", "LSTMRegressor", "DNC", "HyperNALU", "build_sequence_model",
           "SEQUENCE_MODELS", "content_weights", "update_usage", "allocation_weights", "write_memory",
           "update_links", "directional_weights"]

# -- the registry ---------------------------------------------------------------------------------------------

#: name -> (class, fixed options, options a caller may set)
SEQUENCE_MODELS: dict[str, tuple[type, dict, tuple[str, ...]]] = {
    "ugrnn": (UGRNN, {}, ("forget_bias",)),
    "lstm": (LSTMRegressor, {}, ()),
    "dnc": (DNC, {}, ("memory_size", "word_size", "read_heads")),
    "lstm-nalu": (HyperNALU, {"cell": "nalu"}, ("gate", "gate_bias", "controller_sees_value", "eps",
                                                "value_channel")),
    "lstm-nau": (HyperNALU, {"cell": "nau"}, ("controller_sees_value", "value_channel")),
    "lstm-nau-nmu": (HyperNALU, {"cell": "nau-nmu"}, ("gate", "gate_bias", "controller_sees_value",
                                                      "value_channel")),
}


def build_sequence_model(name: str, input_size: int, *, num_seeds: int, hidden_size: int = 64,
                         pad_channel: int | None = None, generators: Generators = None,
                         **options) -> SequenceRegressor:
    """Model ``name`` (one of :data:`SEQUENCE_MODELS`) mapping (S or 1, B, T, input_size) -> (S, B, 1).

    ``options`` are the model's own (e.g. ``read_heads=2`` for the DNC, ``gate="hidden"`` for lstm-nalu); an
    unknown name or option is a ConfigError. With ``generators`` (S torch generators) seed i is initialised
    from generators[i] alone.
    """
    if name not in SEQUENCE_MODELS:
        raise ConfigError(f"unknown sequence model {name!r}; choose from: {', '.join(SEQUENCE_MODELS)}")
    cls, fixed, allowed = SEQUENCE_MODELS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
                          f"{', '.join(allowed) or 'none'}")
    model = cls(input_size, hidden_size, num_seeds=num_seeds, pad_channel=pad_channel, **fixed, **options)
    if generators is not None:
        model.reset_parameters(generators)
    return model
