"""particles: numba-accelerated particle integrators for the Langevin SDE and the
deterministic gradient flow, with estimators of KL, R_t and moments."""
from particles import estimators
from particles.ensemble import Ensemble, gradient_flow, langevin

__all__ = ["langevin", "gradient_flow", "Ensemble", "estimators"]
