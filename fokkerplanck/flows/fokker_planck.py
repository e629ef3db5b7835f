"""Grid solvers for the density flows.

``FokkerPlanck(energy, grid, temperature).solve(rho0, times, method=...)``:
cell-centred finite volumes with Scharfetter-Gummel fluxes
(:mod:`fokkerplanck.operators.fluxes`), zero-flux walls or periodic axes, and two time
integrators:

``"exact"`` (default)
    The exact solution ``exp(t L) rho0`` of the semi-discrete system.  Through
    detailed balance ``L = D^{1/2} S D^{-1/2}`` with ``S`` symmetric negative
    semi-definite; up to 2000 cells ``S`` is diagonalised once (any number of
    times then costs one small matrix product each), above that the action
    of ``exp(t S)`` is a Chebyshev expansion (:mod:`fokkerplanck.operators.expm`) whose
    ``K ~ sqrt(t ||S||)`` matrix-vector products are shared by all output
    times.  Truncation error below ``tol`` (default 1e-14) relative to
    ``||rho0 / sqrt(pi)||_2``.  It is the default because it is both the
    reference and the fastest here: 2D eight Gaussians on 256^2 cells to t = 5
    at 51 times costs ~700 products (see benchmarks/).
``"implicit"``
    SDIRK2 (two-stage, L-stable, second order, both stages share the matrix
    ``I - gamma h L``) with a filtered embedded error estimate, steps on a
    power-of-two ladder so that each sparse LU factorisation is reused,
    steps rejected when they would make a density negative.  ``tol`` bounds
    an embedded first-order estimate of the local L1 error per step, which is
    conservative: the global L1 error measured on the 2D eight Gaussians was
    0.12 tol for tol = 1e-6, 1e-8, 1e-10.  ``dt`` fixes the step (no error
    control; a warning if a density turns negative).  Measured against
    ``exact`` on 64^2 cells to t = 5 it is 70x (tol 1e-6) to 500x (1e-8)
    slower: there is no regime here where it wins, it is kept as an
    independent check of ``exact`` and for generators whose exponential
    is out of reach.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from functools import cached_property

import numpy as np
from scipy.special import logsumexp
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fokkerplanck._core.jit import one_blas_thread
from fokkerplanck._core.validate import check_times, positive_float
from fokkerplanck.operators.expm import (chebyshev_expm_multiply, gershgorin_bound, n_terms, uniformization_multiply)
from fokkerplanck.operators.fluxes import Stencil, faces, sg_generator, sg_symmetric
from fokkerplanck.flows.common import WALL_MASS_TOL, check_finite, initial_density, progress_bar, warn_wall_mass
from fokkerplanck.results import Trajectory

__all__ = ["FokkerPlanck", "WALL_MASS_TOL", "check_finite"]

EIGH_MAX_CELLS = 2000
CHI_MAX = 10.0  # sqrt(1 + chi^2) above which the exact method uniformises first


class FokkerPlanck:
    """Fokker-Planck equation ``d_t rho = div(rho grad U) + T lap rho`` on a grid.

    The generator is available as :attr:`generator` (sparse ``L``,
    ``d rho/dt = L rho`` on flattened densities), :attr:`symmetric`
    (``S = D^{-1/2} L D^{1/2}``) and :meth:`spectral_gap`.
    """

    flow = "fokker-planck"

    def __init__(self, energy, grid, temperature: float = 1.0):
        if energy.dim != grid.ndim:
            raise ValueError(f"energy has dimension {energy.dim} but grid has {grid.ndim}")
        self.energy, self.grid = energy, grid
        self.temperature = positive_float(temperature, "temperature")
        self.U = grid.evaluate(energy)
        self._faces = faces(grid)
        # sqrt of the unnormalised Gibbs weights, scaled to max 1: the similarity transform
        spread = (self.U.max() - self.U.min()) / self.temperature
        if spread > 1400:
            raise ValueError(f"U varies by {spread:.0f} T over the box: exp(-U/2T) under/overflows. "
                             "Shrink the box or raise the temperature")
        self._sqrt_pi = np.exp(-(self.U - self.U.min()).ravel() / (2 * self.temperature))

    @cached_property
    def generator(self) -> sp.csr_matrix:
        return sg_generator(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def symmetric(self) -> sp.csr_matrix:
        return sg_symmetric(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def stencil(self) -> Stencil:
        """:attr:`symmetric` as a matrix-free stencil (the exact solver's Chebyshev sweeps)."""
        return Stencil.symmetric(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def generator_stencil(self) -> Stencil:
        """:attr:`generator` as a matrix-free stencil (the exact solver's uniformisation)."""
        return Stencil.generator(self.grid, self.U, self.temperature, self._faces)

    @cached_property
    def gibbs(self) -> np.ndarray:
        """Normalised discrete Gibbs density (exactly stationary for the scheme)."""
        return self.grid.density_from_logpdf(-self.U / self.temperature)

    @cached_property
    def lam_max(self) -> float:
        return gershgorin_bound(self.symmetric)

    def spectral_gap(self, k: int = 1) -> float | np.ndarray:
        """Smallest non-zero eigenvalue magnitude ``lambda_1`` of ``-L`` (or the ``k``
        smallest), by shift-invert Lanczos on ``S``.  A Poincare constant of the
        discrete law: an *estimate* (not a certificate) of the log-Sobolev constant."""
        n = self.grid.size
        if n <= EIGH_MAX_CELLS:
            lam = -np.linalg.eigvalsh(self.symmetric.toarray())[::-1]
        else:
            sigma = 1e-9 * self.lam_max
            vals = spla.eigsh(self.symmetric.tocsc(), k=k + 1, sigma=sigma, which="LM",
                              return_eigenvectors=False, tol=1e-12)
            lam = np.sort(-vals)
        out = lam[1:k + 1]
        return float(out[0]) if k == 1 else out

    # ------------------------------------------------------------------------------------------
    def solve(self, rho0, times, *, method: str = "exact", tol: float | None = None, dt: float | None = None,
              normalise: str = "warn", progress: bool = False, refine: bool | int = False) -> Trajectory:
        """Densities at ``times`` from ``rho0`` at time 0.

        rho0 : grid density (shape ``grid.shape``) or a density object with
            ``on_grid`` (for example :class:`fokkerplanck.densities.Gaussian`).
            NaN, negative values or the wrong shape raise ValueError; a density
            whose grid mass is not 1 is normalised with a warning
            (``normalise="raise"`` refuses it instead).
        method : ``"exact"`` or ``"implicit"`` (see the module docstring).
        tol : truncation tolerance (exact, default 1e-14) or local L1 error per
            step (implicit, default 1e-9).
        dt : implicit only: fixed step, no error control.
        refine : also solve with 2 and 4 times the cell size (or ``refine`` levels
            in all) and attach Richardson error estimates and extrapolations of
            KL, R_t and the densities as ``trajectory.refinement``
            (:mod:`fokkerplanck.flows.refine`).
        """
        # the exact solver's parallel sweeps alternate with BLAS calls: BLAS on one thread
        # from the initial density on (see one_blas_thread); eigh (small grids) keeps all cores
        sweeps = method == "exact" and self.grid.size > EIGH_MAX_CELLS
        with one_blas_thread() if sweeps else contextlib.nullcontext():
            return self._solve(rho0, times, method, tol, dt, normalise, progress, refine)

    def _solve(self, rho0, times, method, tol, dt, normalise, progress, refine):
        given = rho0
        rho0 = initial_density(self.grid, rho0, normalise)
        times = check_times(times)
        t0 = time.perf_counter()
        if method == "exact":
            tol = 1e-14 if tol is None else positive_float(tol, "tol")
            dens, info = self._exact(rho0, times, tol, progress)
            scheme = {"method": "exact", "tol": tol}
        elif method == "implicit":
            tol = 1e-9 if tol is None else positive_float(tol, "tol")
            if dt is not None:
                dt = positive_float(dt, "dt")
            dens, info = self._implicit(rho0, times, tol, dt, progress)
            scheme = {"method": "implicit", "scheme": "SDIRK2", "tol": tol, "dt": dt}
        else:
            raise ValueError(f"method must be 'exact' or 'implicit', got {method!r}")
        info["wall_time"] = time.perf_counter() - t0
        check_finite(dens, times, f"Fokker-Planck ({method})")
        info["min_density"] = float(dens.min())
        info["max_wall_mass"] = warn_wall_mass(self.grid, times, dens)
        scheme.update(space="finite-volume Scharfetter-Gummel")
        tr = Trajectory(self.grid, times, dens, self.energy, self.temperature, flow=self.flow,
                        scheme=scheme, info=info)
        if refine:
            from fokkerplanck.flows.refine import refine as richardson

            tr.refinement = richardson(
                lambda g, r0: FokkerPlanck(self.energy, g, self.temperature).solve(
                    r0, times, method=method, tol=tol, dt=dt, normalise="silent"),
                tr, given if hasattr(given, "on_grid") else rho0, 3 if refine is True else refine)
        return tr

    def _exact(self, rho0, times, tol, progress):
        """Two phases.  The symmetric form works on ``w = rho / sqrt(pi)``, and its
        errors, relative to ``||w||_2``, reach the density multiplied by
        ``sqrt(1 + chi^2(rho || pi))``: astronomically large when ``rho0`` has
        tails far heavier than the Gibbs law (a wide Gaussian against a
        narrow mixture).  So while ``sqrt(1 + chi^2) > CHI_MAX`` the flow is
        advanced by uniformisation (positive, L1-exact to ``tol``, on
        doubling time segments) until the fast tails have drained; then the
        symmetric form (eigh or Chebyshev) takes over."""
        n = self.grid.size
        vol = self.grid.cell_volume
        out = np.empty((times.size, n))
        pi_n = self.gibbs.ravel()
        G = self.generator_stencil
        rate = float(np.abs(G.diag).max())
        rho = rho0.ravel().copy()
        seg = 4.0 / rate
        bar = progress_bar(progress, int(times.size), "Fokker-Planck (exact)")
        log_pi = np.log(pi_n, out=np.full(n, -np.inf), where=pi_n > 0)
        if np.any(pi_n == 0):  # underflow at the walls: the exact log, not log(0)
            lp = -self.U.ravel() / self.temperature
            log_pi = lp - (logsumexp(lp) + math.log(vol))

        def log_chi(r):
            """``log sqrt(1 + chi^2(r || pi))`` without overflow or 0/0 where pi underflows."""
            pos = r > 0
            return 0.5 * (logsumexp(2 * np.log(r[pos]) - log_pi[pos]) + math.log(vol))

        rho, t, j, mv1 = self._uniformise(rho, times, out, G, rate, seg, tol, log_chi, bar)
        while j < times.size and times[j] <= t:
            out[j] = rho
            j += 1
        info = {"uniformisation_until": t, "uniformisation_matvecs": mv1}
        rest = times[j:] - t
        if rest.size:
            sp_ = self._sqrt_pi
            w0 = rho / sp_
            if n <= EIGH_MAX_CELLS:
                lam, V = np.linalg.eigh(self.symmetric.toarray())
                # S is negative semi-definite with the Gibbs direction as its kernel: eigh gives
                # that zero as a round-off of ~1e-13 lam_max either sign, and exp(t lam) then
                # drifts the mass for large t (4e-6 at t = 1e7).  Round-off zeros are zeros.
                lam = np.where(lam > -1e-10 * np.abs(lam).max(), 0.0, lam)
                W = (np.exp(np.outer(rest, lam)) * (V.T @ w0)) @ V.T
                info.update(exact="eigh", lam_max=float(-lam.min()))
            else:
                def progress_cb(k, K, _bar=bar, _j=j):  # progress through the Chebyshev sweep
                    _bar.n = _j + int((times.size - _j) * k / K)
                    _bar.refresh()
                W, seg_info = self._chebyshev(w0, rest, tol, progress_cb if bar is not None else None)
                info.update(exact="chebyshev", lam_max=self.lam_max, **seg_info)
            out[j:] = W * sp_
        if bar is not None:
            bar.close()
        return out.reshape(times.size, *self.grid.shape), info

    def _uniformise(self, rho, times, out, G, rate, seg, tol, log_chi, bar):
        """The positive phase of :meth:`_exact`: uniformisation on doubling segments while
        ``sqrt(1 + chi^2) > CHI_MAX``; returns ``(rho, t, j, products)``."""
        t, j, mv1 = 0.0, 0, 0
        while j < times.size and log_chi(rho) > math.log(CHI_MAX):
            t_next = min(t + seg, times[-1])
            inside = np.flatnonzero((times > t) & (times <= t_next))
            tt = np.concatenate([times[inside] - t, [t_next - t]])
            res, k = uniformization_multiply(G.dot, rho, tt, rate, tol=tol, combine=G.combine_parallel)
            mv1 += k
            out[inside] = res[:-1]
            j = max(j, inside[-1] + 1) if inside.size else j
            while j < times.size and times[j] <= t:  # outputs at the start (t = 0)
                out[j] = rho
                j += 1
            rho, t, seg = res[-1], t_next, 2 * seg
            if bar is not None:
                bar.n = j
                bar.refresh()
        return rho, t, j, mv1

    def _chebyshev(self, w0, rest, tol, callback):
        """``exp(t S) w0`` for ``t in rest``: one Chebyshev sweep for all times within
        :func:`~fokkerplanck.operators.expm.max_segment`; beyond it the sweep restarts from the
        last state (errors add: at most ``tol ||w0||`` per segment), and once the part
        of the state orthogonal to the Gibbs direction has decayed below
        ``tol ||w0||`` by the spectral gap (``||e^{tS} r|| <= e^{-lambda_1 t} ||r||``)
        the answer is the Gibbs law itself.  Never a silently truncated expansion."""
        from fokkerplanck.operators import expm

        S, lam = self.stencil, self.lam_max
        seg = expm.max_segment(lam, tol, expm.KMAX)
        if rest[-1] <= seg:
            return (chebyshev_expm_multiply(S.dot, w0, rest, lam, tol=tol, callback=callback,
                                            combine=S.combine_parallel),
                    {"chebyshev_matvecs": n_terms(float(rest.max()), lam, tol), "segments": 1})
        out = np.empty((rest.size, w0.size))
        phi = self._sqrt_pi / np.linalg.norm(self._sqrt_pi)
        norm0 = np.linalg.norm(w0)
        gap = None
        base, w, i, segments, matvecs, jumped = 0.0, w0, 0, 0, 0, 0
        while i < rest.size:
            c = float(phi @ w)
            r = float(np.linalg.norm(w - c * phi))
            if r <= tol * norm0:  # already at the Gibbs law to tolerance
                out[i:] = c * phi
                jumped += rest.size - i
                break
            if gap is None:
                gap = self.spectral_gap()
            settle = base + math.log(r / (tol * norm0)) / gap if gap > 0 else math.inf
            done = rest[i:] >= settle
            if done.all():
                out[i:] = c * phi
                jumped += rest.size - i
                break
            sel = np.flatnonzero((rest[i:] <= base + seg) & ~done) + i
            if sel.size:
                W = chebyshev_expm_multiply(S.dot, w, rest[sel] - base, lam, tol=tol, combine=S.combine_parallel)
                out[sel] = W
                matvecs += n_terms(float(rest[sel[-1]] - base), lam, tol)
                base, w, i = float(rest[sel[-1]]), W[-1], int(sel[-1]) + 1
            else:  # no output in this segment: advance the state by one whole segment
                w = chebyshev_expm_multiply(S.dot, w, [seg], lam, tol=tol, combine=S.combine_parallel)[0]
                matvecs += n_terms(seg, lam, tol)
                base += seg
            segments += 1
            if segments > 10_000:
                raise RuntimeError(f"the exact solver would need more than 10000 Chebyshev segments of length "
                                   f"{seg:.3g} to reach t = {rest[-1]:g} (spectral gap {gap:.3g}): use "
                                   "method='implicit' or shorter times")
            if callback is not None:
                callback(i, rest.size)
        info = {"chebyshev_matvecs": matvecs, "segments": segments, "gibbs_jump_outputs": jumped,
                "segment_length": seg}
        if gap is not None:
            info["spectral_gap"] = gap
        return out, info

    def _implicit(self, rho0, times, tol, dt, progress):
        L = self.generator.tocsc()
        n = self.grid.size
        Id = sp.identity(n, format="csc")
        gamma = 1.0 - 1.0 / math.sqrt(2.0)
        vol = self.grid.cell_volume
        cache: dict = {}

        def lu(h):
            if h not in cache:
                if len(cache) > 8:
                    cache.pop(next(iter(cache)))
                cache[h] = spla.splu((Id - gamma * h * L).tocsc())
            return cache[h]

        y = rho0.ravel().copy()
        t = 0.0
        out = np.empty((times.size, n))
        spacing = np.diff(np.concatenate([[0.0], times]))
        h = dt if dt is not None else (np.min(spacing[spacing > 0]) / 8 if np.any(spacing > 0) else 1e-3)
        steps = rejected = 0
        bar = progress_bar(progress, int(times.size), "Fokker-Planck (SDIRK2)")
        for j, tout in enumerate(times):
            while tout - t > 1e-12 * max(1.0, tout):
                hs = min(h, tout - t)
                solver = lu(hs)
                Y1 = solver.solve(y)
                rhs = y + (1.0 - gamma) * hs * (L @ Y1)
                Y2 = solver.solve(rhs)
                if dt is None:
                    err = vol * np.abs(solver.solve((Y2 - rhs) - (Y1 - y))).sum()
                    negative = Y2.min() < -1e-14 * Y2.max()
                    if err > tol or negative:
                        rejected += 1
                        h = hs / (4.0 if negative else 2.0 ** max(1, math.ceil(0.5 * math.log2(err / tol))))
                        if h < 1e-14 * max(1.0, tout):
                            raise RuntimeError(f"implicit step size underflow at t = {t:g} (error {err:.3g})")
                        continue
                    if hs == h and err < 0.25 * tol:
                        h = 2.0 * h  # at most double; stays on the ladder, so the LU is reused later
                y = Y2
                t += hs
                steps += 1
            out[j] = y
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        info = {"steps": steps, "rejected": rejected, "factorisations": len(cache)}
        if dt is not None and out.min() < 0:
            warnings.warn(f"fixed step dt = {dt:g} produced negative densities (min {out.min():.3g}); "
                          "SDIRK2 keeps positivity only for small enough steps: reduce dt or let the "
                          "error control choose it (dt=None)", RuntimeWarning, stacklevel=3)
        return out.reshape(times.size, *self.grid.shape), info
