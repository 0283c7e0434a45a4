"""nalm: neural arithmetic logic modules for PyTorch.

The NAC and NALU of Trask et al. (NeurIPS 2018) and their successors (NAU, NMU, iNALU, NPU, RealNPU) behind one
API, with a seed axis that trains many independent models as one tensor program.

>>> import nalm, torch
>>> layer = nalm.get_unit("nmu", 4, 2)
>>> layer(torch.rand(32, 4)).shape
torch.Size([32, 2])
"""

from . import functional
from .errors import ConfigError, DataError, NalmError, ShapeError
from .nn.ensemble import Ensemble
from .units import ArithmeticUnit, get_unit, list_units, register_unit, unit_options
from .units.recurrent import RecurrentCell

__version__ = "0.1.0"

__all__ = ["functional", "get_unit", "list_units", "register_unit", "unit_options", "ArithmeticUnit",
           "RecurrentCell", "Ensemble", "NalmError", "ConfigError", "ShapeError", "DataError", "__version__"]
