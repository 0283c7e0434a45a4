"""nalm's arithmetic units; importing this package registers them all."""

from ._registry import get_unit, list_units, register_unit, unit_class, unit_options
from .base import ArithmeticUnit
from .inalu import INALU
from .linear import Linear
from .madsen import NAU, NMU
from .nac import NAC, NALU, NACMul
from .npu import NPU, RealNPU

__all__ = ["ArithmeticUnit", "get_unit", "list_units", "register_unit", "unit_class", "unit_options",
           "NAC", "NACMul", "NALU", "NAU", "NMU", "INALU", "NPU", "RealNPU", "Linear"]
