"""fokkerplanck: exact density evolutions for Langevin and deterministic gradient flows.

Public names are defined in their modules and listed here.
"""
from fokkerplanck import densities, energies
from fokkerplanck.grid import Grid
from fokkerplanck.flows.continuity import Continuity, forward_lagrangian
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.results import Trajectory

__all__ = ["Grid", "FokkerPlanck", "Continuity", "forward_lagrangian", "Trajectory", "energies", "densities"]
__version__ = "0.1.0"
