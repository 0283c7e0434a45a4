"""The unit registry: ``@register_unit("nmu")``, ``get_unit(name, in, out, **options)``, ``list_units()``."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from nalm.errors import ConfigError

if TYPE_CHECKING:
    from .base import ArithmeticUnit

_UNITS: dict[str, type[ArithmeticUnit]] = {}
# Arguments every unit takes; the rest of a unit's keyword arguments are its options.
_COMMON = ("self", "in_features", "out_features", "num_seeds", "device", "dtype")


def register_unit(name: str):
    """Class decorator: register a unit under ``name``. Registering a name twice is an error."""

    def wrap(cls):
        if name in _UNITS:
            raise ConfigError(f"unit name {name!r} is already registered by {_UNITS[name].__name__}")
        cls.unit_name = name
        _UNITS[name] = cls
        return cls

    return wrap


def list_units() -> list[str]:
    """The registered unit names, sorted."""
    return sorted(_UNITS)


def unit_class(name: str) -> type[ArithmeticUnit]:
    """The class registered under ``name``; a ConfigError listing the known names otherwise."""
    try:
        return _UNITS[name]
    except KeyError:
        raise ConfigError(f"unknown unit {name!r}; choose from: {', '.join(list_units())}") from None


def unit_options(name: str) -> dict[str, object]:
    """The options of unit ``name`` with their defaults."""
    sig = inspect.signature(unit_class(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in _COMMON}


def get_unit(name: str, in_features: int, out_features: int, *, num_seeds: int | None = None,
             device=None, dtype=None, **options):
    """Build unit ``name`` mapping ``in_features`` to ``out_features``.

    ``num_seeds=S`` returns S independent copies as one module mapping (S, B, in) -> (S, B, out).
    An unknown name or option raises :class:`nalm.ConfigError` listing what is allowed.
    """
    cls = unit_class(name)
    allowed = unit_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise ConfigError(f"unit {name!r} has no option {', '.join(map(repr, unknown))}; its options are: {listed}")
    return cls(in_features, out_features, num_seeds=num_seeds, device=device, dtype=dtype, **options)
