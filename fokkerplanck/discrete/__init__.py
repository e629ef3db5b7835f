"""Finite and mixed state spaces: lattices and spin models (:mod:`.finite`), their exact
master equations through the shared reversible propagator, the same on the orbits of a
lattice's symmetries past 2^22 states (:mod:`.orbits`), and labels with Gaussian
coordinates (:mod:`.mixed`)."""
from fokkerplanck.discrete.finite import (
                                          DYNAMICS,
                                          MAX_STATES,
                                          FiniteSpace,
                                          Lattice,
                                          MasterEquation,
                                          PairEnergy,
                                          TableEnergy,
                                          TooManyStatesError,
                                          dirichlet_form,
                                          glauber,
                                          ising,
                                          ising_chain_log_partition,
                                          ising_chain_mean_energy,
                                          kl,
                                          metropolis,
                                          n_states,
                                          potts,
)
from fokkerplanck.discrete.mixed import JointMixture, MixedSpace
from fokkerplanck.discrete.orbits import (
                                          LUMPED_DYNAMICS,
                                          MAX_ORBITS,
                                          SymmetricMasterEquation,
                                          SymmetricSpace,
                                          burnside_count,
                                          lattice_symmetries,
                                          lumped_glauber,
                                          lumped_metropolis,
                                          orbit_memory,
)

__all__ = ["MAX_STATES", "Lattice", "PairEnergy", "TableEnergy", "ising", "potts", "FiniteSpace", "glauber",
           "metropolis", "DYNAMICS", "MasterEquation", "kl", "dirichlet_form", "ising_chain_log_partition",
           "ising_chain_mean_energy", "TooManyStatesError", "n_states", "JointMixture", "MixedSpace",
           "MAX_ORBITS", "SymmetricSpace", "SymmetricMasterEquation", "lattice_symmetries", "burnside_count",
           "lumped_glauber", "lumped_metropolis", "LUMPED_DYNAMICS", "orbit_memory"]
