"""Shared fixtures of the unit-library tests."""

from __future__ import annotations

import pytest

import nalm

# Every registered unit with its default options (so a newly registered unit is tested automatically), plus the
# option variants that change a unit's parameter set or its maths.
_EXTRA_VARIANTS = [
    ("nalu", {"tied": False}),
    ("nalu", {"gate": "independent"}),
    ("nalu", {"gate": "fixed", "gate_value": 0.9}),
    ("linear", {"bias": True}),
    ("gnalu", {"gate": "independent"}),
    ("nmru", {"sign_retrieval": True}),
    ("mcfc", {"mode": "mul"}),
    ("inalu", {"init": "glorot", "reg_reduction": "mean"}),
    ("inalu", {"reinit": True}),
]
VARIANTS = [(name, {}) for name in nalm.list_units()] + [v for v in _EXTRA_VARIANTS if v[0] in nalm.list_units()]


def _variant_id(v: tuple[str, dict]) -> str:
    name, opts = v
    return name + "".join(f"-{k}={val}" for k, val in opts.items())


@pytest.fixture(params=VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
def variant(request) -> tuple[str, dict]:
    """(unit name, options) for every registered unit and a few option variants."""
    return request.param
