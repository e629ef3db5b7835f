"""Checks of the theory that return their numbers (used by tests and ``fpk verify``)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fokkerplanck import energies as E
from fokkerplanck.densities import GridDensity
from fokkerplanck.flows.continuity import Continuity, forward_lagrangian
from fokkerplanck.flows.fokker_planck import FokkerPlanck

__all__ = ["NonStationarity", "nonstationarity_check"]


@dataclass(frozen=True)
class NonStationarity:
    """Numbers of the non-stationarity theorem for one energy (see :func:`nonstationarity_check`)."""

    ratio_at_target: float          # R_0 at rho*: 1 by the Stein identity
    rhs_rel_error: float            # ||FV d_t rho(0) - rho* h / T||_1 / ||rho* h / T||_1
    h_at_minimum: float             # h at the lowest cell: > 0 at a non-degenerate minimum
    h_min: float                    # most negative h where rho* carries mass (> 1e-8 of its peak)
    mass_h_positive: float          # rho*-mass of {h > 0}
    sign_change_radius: float       # smallest |x - argmin U| with h < 0 (where h turns negative)
    coefficient_exact: float        # E_rho*[(h/T)^2] / 2
    coefficient_lagrangian: float   # fit of KL(t)/t^2 at small t, exact flow (forward Lagrangian)
    coefficient_finite_volume: float  # the same for the finite-volume solver
    fokker_planck_drift: float      # ||rho_t - rho*||_1 at the last time, Fokker-Planck from rho*

    @property
    def coefficient_rel_error(self) -> float:
        return abs(self.coefficient_lagrangian / self.coefficient_exact - 1)


def _fit_coefficient(times, kl):
    """``c`` in ``KL = c t^2 + c1 t^3 + c2 t^4``: least squares of KL/t^2 on [1, t, t^2]."""
    t = np.asarray(times)
    y = np.asarray(kl) / t**2
    return float(np.polynomial.polynomial.polyfit(t, y, 2)[0])


def nonstationarity_check(energy, grid, temperature: float = 1.0, times=None) -> NonStationarity:
    """Start the deterministic flow at the (discrete) Gibbs law and measure:
    ``d_t rho = rho* h / T`` with ``h = T lap U - |grad U|^2`` changing sign,
    ``R_0 = 1``, ``KL(rho_t || rho*) = (t^2/2) E[(h/T)^2] + O(t^3)``; and that the
    Fokker-Planck flow keeps ``rho*`` stationary.  ``times`` for the fit default
    to five points up to where the predicted KL is 5e-3 (O(t^3) below 1%)."""
    T = float(temperature)
    X = grid.points
    pi = grid.gibbs(energy, T)
    vol = grid.cell_volume
    h = energy.residual(X, T).reshape(grid.shape)
    w = pi * vol
    ratio = T * np.sum(w * energy.laplacian(X).reshape(grid.shape)) / np.sum(
        w * np.sum(energy.grad(X) ** 2, axis=1).reshape(grid.shape))
    fv = Continuity(energy, grid, temperature=T)
    target = pi * h / T
    rhs_err = np.abs(fv.rhs(pi) - target).sum() / np.abs(target).sum()
    imin = np.argmin(energy.value(X))
    bulk = pi > 1e-8 * pi.max()
    neg = (h < 0).ravel() & bulk.ravel()
    radius = float(np.min(np.linalg.norm(X[neg] - X[imin], axis=1))) if neg.any() else np.inf
    coef = 0.5 * np.sum(w * (h / T) ** 2)
    times = (np.linspace(0.2, 1.0, 5) * 0.1 / np.sqrt(2 * coef) if times is None
             else np.asarray(times, dtype=float))
    logz = grid.log_partition(energy, T)
    lag = forward_lagrangian(energy, GridDensity(grid, pi, normalise="silent"), times, temperature=T,
                             log_partition=logz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wall mass is the Gibbs law's: checked by the caller
        tr = fv.solve(pi, times, cfl=0.1)
        fp = FokkerPlanck(energy, grid, T)
        st = fp.solve(fp.gibbs, [0.0, 10.0])
    return NonStationarity(
        ratio_at_target=float(ratio), rhs_rel_error=float(rhs_err), h_at_minimum=float(h.ravel()[imin]),
        h_min=float(h[bulk].min()), mass_h_positive=float(np.sum(w[h > 0])), sign_change_radius=radius,
        coefficient_exact=float(coef), coefficient_lagrangian=_fit_coefficient(times, lag.kl),
        coefficient_finite_volume=_fit_coefficient(times, tr.kl()),
        fokker_planck_drift=float(np.abs(st.densities[-1] - fp.gibbs).sum() * vol))


def stationary_law(fokker_planck) -> np.ndarray:
    """The stationary law of the discrete generator, computed independently of any
    initial law: the sparse LU solve of ``L x = 0`` with one equation replaced by
    the normalisation ``sum x vol = 1``.  Its forward error is ~ eps / lambda_1
    (the spectral gap): metastable laws are determined less precisely."""
    import scipy.sparse.linalg as spla

    fp = fokker_planck
    n = fp.grid.size
    L = fp.generator.tolil()
    L[n - 1, :] = np.full(n, fp.grid.cell_volume)
    b = np.zeros(n)
    b[-1] = 1.0
    return spla.spsolve(L.tocsc(), b).reshape(fp.grid.shape)


@dataclass(frozen=True)
class CompositionResult:
    confining: bool
    residual: float        # ||L rho*||_1 / (||L||_1 ||rho*||_1): rho* = exp(-U/T)/Z is a null vector
    forward_error: float   # ||stationary_law - rho*||_1
    spectral_gap: float    # lambda_1: the forward error's conditioning is ~ 1 / lambda_1

    @property
    def forward_tolerance(self) -> float:
        return 1e-12 + 1e-14 / self.spectral_gap


def composed_energies(negation: float = 0.35, sigma: float = 0.5) -> dict:
    """The paper's experts and their compositions, by name: ``A``, ``B``,
    ``conjunction`` (``U_A + U_B``), ``disjunction`` (``-log(e^{-U_A} + e^{-U_B})``),
    ``negation`` (``U_B - negation * U_A``)."""

    A, B = E.GaussianMixture.paper_A(sigma), E.GaussianMixture.paper_B(sigma)
    return {"A": A, "B": B, "conjunction": A + B, "disjunction": E.softmin(A, B), "negation": B - negation * A}


def composition_check(grid, temperature: float = 1.0) -> dict:
    """The paper's compositions of experts A and B (conjunction ``U_A + U_B``,
    disjunction ``-log(e^{-U_A} + e^{-U_B})``, negation ``U_B - 0.35 U_A``): each is
    confining on ``grid`` and the stationary law of its Fokker-Planck generator is
    ``exp(-U/T) / Z``.  Returns ``{name: CompositionResult}``."""

    out = {}
    for name, U in composed_energies().items():
        if name in ("A", "B"):
            continue
        fp = FokkerPlanck(U, grid, temperature)
        pi = fp.gibbs.ravel()
        L = fp.generator
        residual = float(np.abs(L @ pi).sum() / (abs(L).sum(axis=0).max() * np.abs(pi).sum()))
        fwd = float(np.abs(stationary_law(fp) - fp.gibbs).sum() * grid.cell_volume)
        out[name] = CompositionResult(E.check_confining(U, grid, temperature).ok, residual, fwd, fp.spectral_gap())
    return out
