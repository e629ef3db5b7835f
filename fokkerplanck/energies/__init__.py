"""Energies ``U : R^d -> R`` (and paths ``U(x, t)``): value, gradient, Laplacian,
Hessian, as vectorised NumPy methods on grids and as numba kernels inside particle
loops.

Where each part lives:

============================  =====================================================
:mod:`.base`                  the contract (:class:`Energy`, :class:`Kernels`), the
                              registry of energy types, ``from_spec``, the algebra
                              (``a * U1 + b * U2 + c``, :func:`softmin`)
:mod:`.families`              built-in families: quadratic, double well, Gaussian
                              mixtures (rings, grids, the paper's sets)
:mod:`.custom`                :class:`Custom`: your own numba kernels
:mod:`.callables`             NumPy, PyTorch and JAX callables (no kernels)
:mod:`.data`                  :class:`KDE`: smoothed-data energies
:mod:`.polynomial`            :class:`Polynomial`; :class:`Conditional`: ``z -> U(x, z)``; :class:`Stacked`
:mod:`.specs`                 energies as data (``spec_of``, ``from_config``)
:mod:`.confinement`           is ``exp(-U/T)`` normalisable, does the box hold it?
:mod:`.blocks`                blocked kernels of the particle integrators' hot loop
:mod:`.paths`                 time-dependent energies ``U(x, t)``: homotopies, VPFB
============================  =====================================================

A new family is one class in a module of this package that subclasses
:class:`Energy` and calls :func:`register`; list it here.
"""
from fokkerplanck.energies.base import (
                                        CONSTRUCTORS,
                                        ENERGY_TYPES,
                                        Constant,
                                        Energy,
                                        Kernels,
                                        NoKernelsError,
                                        NonFiniteEnergyError,
                                        SoftMin,
                                        Sum,
                                        UnresolvedEnergyError,
                                        from_spec,
                                        register,
                                        softmin,
)
from fokkerplanck.energies.callables import CallableEnergy, from_callable, from_jax, from_torch
from fokkerplanck.energies.confinement import ConfinementReport, check_confining
from fokkerplanck.energies.custom import Custom
from fokkerplanck.energies.data import KDE
from fokkerplanck.energies.families import DoubleWell, GaussianMixture, Quadratic
from fokkerplanck.energies.polynomial import Conditional, Polynomial, Stacked
from fokkerplanck.energies.specs import custom_modules, from_config, spec_of

__all__ = [
    "Kernels", "Energy", "Quadratic", "DoubleWell", "GaussianMixture", "Sum", "SoftMin", "Constant",
    "Custom", "softmin", "from_spec", "from_config", "check_confining", "ConfinementReport",
    "ENERGY_TYPES", "CONSTRUCTORS", "register", "UnresolvedEnergyError", "custom_modules",
    "NoKernelsError", "NonFiniteEnergyError", "spec_of", "CallableEnergy", "from_callable", "from_torch",
    "from_jax", "KDE", "Polynomial", "Conditional", "Stacked",
]
