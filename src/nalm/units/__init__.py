"""nalm's arithmetic units; importing this package registers them all."""

from ._registry import get_unit, list_units, register_unit, unit_class, unit_options
from .base import ArithmeticUnit
from .division import NMRU, NRU
from .inalu import INALU
from .linear import Linear
from .madsen import NAU, NMU
from .mcfc import MCFC
from .nac import GNALU, NAC, NALU, NACMul
from .npu import NPU, RealNPU
from .snmu import SNMU

__all__ = ["ArithmeticUnit", "get_unit", "list_units", "register_unit", "unit_class", "unit_options",
           "NAC", "NACMul", "NALU", "GNALU", "NAU", "NMU", "SNMU", "NRU", "NMRU", "INALU", "NPU", "RealNPU",
           "MCFC", "Linear"]
