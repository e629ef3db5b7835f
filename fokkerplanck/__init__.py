"""fokkerplanck: exact density evolutions for Langevin and deterministic gradient flows.

Public names are defined in their modules and listed here.
"""
from . import densities, energies
from .grid import Grid

__all__ = ["Grid", "energies", "densities"]
__version__ = "0.1.0"
