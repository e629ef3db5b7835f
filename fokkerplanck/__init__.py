"""fokkerplanck: exact density evolutions for Langevin and deterministic gradient flows.

Public names are defined in their modules and listed here.
"""
from . import densities, energies
from .grid import Grid
from .solvers import FokkerPlanck
from .trajectory import Trajectory

__all__ = ["Grid", "FokkerPlanck", "Trajectory", "energies", "densities"]
__version__ = "0.1.0"
