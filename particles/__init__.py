"""particles: numba-accelerated particle integrators and estimators (see issue: Particles)."""
