"""particles: numba-accelerated particle integrators for the Langevin SDE and the
deterministic gradient flow, with estimators of KL, R_t and moments.

What to save is a :class:`Save`, where to run a :class:`Shards`; the same objects for
:func:`langevin`, :func:`gradient_flow`, :func:`particles.annealed.annealed_langevin`,
:func:`particles.jumps.simulate` and :func:`particles.mixed.simulate`."""
from particles import ensemble, estimators
from particles.api import gradient_flow, langevin
from particles.ensemble import Ensemble
from particles.options import Save, Shards

__all__ = ["langevin", "gradient_flow", "Ensemble", "Save", "Shards", "estimators"]
