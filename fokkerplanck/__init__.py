"""fokkerplanck: exact density evolutions for Langevin and deterministic gradient flows.

Public names are defined in their modules and listed here.
"""
from . import densities, energies
from .grid import Grid
from .continuity import Continuity, forward_lagrangian
from .solvers import FokkerPlanck
from .trajectory import Trajectory

__all__ = ["Grid", "FokkerPlanck", "Continuity", "forward_lagrangian", "Trajectory", "energies", "densities"]
__version__ = "0.1.0"
