"""fokkerplanck: exact density evolutions for Langevin and deterministic gradient flows.

Public names are defined in their modules and listed here.
"""
from fokkerplanck import densities, energies
from fokkerplanck._core.version import __version__
from fokkerplanck.flows.continuity import Continuity, forward_lagrangian
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.grid import Grid
from fokkerplanck.results import Trajectory

__all__ = ["__version__", "Grid", "FokkerPlanck", "Continuity", "forward_lagrangian", "Trajectory", "energies", "densities"]
