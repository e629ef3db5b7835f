"""``log Z`` by thermodynamic integration along ``U_s = (1 - s) U0 + s U1``.

``d/ds log Z_s = -E_{rho_s}[(U1 - U0) / T]``, so

    log Z_1 = log Z_0 - int_0^1 E_{rho_s}[(U1 - U0) / T] ds,

with ``rho_s ~ exp(-U_s / T)``.  The integral is taken by Gauss-Legendre nodes on
[0, 1].  N independent MALA chains are carried from node to node (node ``k + 1``
starts from node ``k``'s final states, node 0 from exact samples of ``rho_0``).  At
each node:

1. the step is tuned by pilot runs (``dt="auto"``), which already move the chains;
2. burn-in (``burn_in="auto"``): chunks of MALA steps until the chunk means of the
   integrand no longer drift (paired across chains: the mean change between consecutive
   chunks is within 2 of its standard errors) and a chunk spans at least
   ``BURN_TAU_FACTOR`` integrated autocorrelation times; the chunk doubles while it is
   shorter.  The steps taken are recorded (``ThermoResult.burn_in``);
3. ``n_steps`` production steps, the integrand recorded along the way: its mean over
   chains and time is the node's estimate, with the standard error from the
   integrated autocorrelation time (``ses = sd / sqrt(ESS)``, ``ESS = samples / tau``) and
   split R-hat across the chains as the convergence diagnostic.

The error of ``log Z`` is by batch means: each chain's time averages, summed over the
nodes with the quadrature weights, are independent batches (chains are independent), so
the standard error covers the autocorrelation within a node and the correlation
between nodes that the carried chains bring.  (With fewer than 30 chains each chain's
run is cut into several batches.)  Not covered: the quadrature error
(:func:`fokkerplanck.theory.thermo.ti_integrand` gives the exact integrand on a grid to
measure it) and any bias from chains that have not reached ``rho_s`` (R-hat, the burn-in
and a RuntimeWarning say when that is suspect).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from fokkerplanck._core.validate import finite_array, positive_float, positive_int
from fokkerplanck.energies import Sum

from particles.api import langevin
from particles.estimators import autocorrelation_time, split_rhat
from particles.options import derived_seed

__all__ = ["ThermoResult", "thermodynamic_integration", "gauss_legendre_01"]

ACCEPT = (0.5, 0.8)  # MALA acceptance aimed at by dt="auto" (0.574 is the asymptotic optimum)
PILOT_STEPS = 20
PILOTS = 10
MAX_SAVES = 50         # integrand records per run (thinned beyond: each record costs a kernel launch)
TUNE_STEPS = 100       # steps of the runs comparing the step and its half (dt="auto")
TUNE_HALVINGS = 4      # at most this many halvings of the step ...
TUNE_GAIN = 0.8        # ... each while it cuts the integrand's autocorrelation time (in steps) by 20%
BURN_CHUNK_MIN = 20    # steps of the first burn-in chunk (at least; n_steps // 2 by default)
BURN_TAU_FACTOR = 5.0  # a burn-in chunk spans at least this many autocorrelation times
BURN_MAX_FACTOR = 20   # burn-in budget per node, in units of n_steps
RHAT_MAX = 1.05        # split R-hat above this flags a node as not converged
MIN_BATCHES = 30       # batches for the batch-means error of log Z (chains, or chains x pieces)


def gauss_legendre_01(n: int):
    """Nodes and weights of the ``n``-point Gauss-Legendre rule on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(positive_int(n, "nodes"))
    return 0.5 * (x + 1.0), 0.5 * w


@dataclass
class ThermoResult:
    """``log_z`` and its standard error ``se`` (batch means over the chains); per node
    ``s``: the weights, the integrand means ``E_s[(U1 - U0) / T]`` and their standard errors
    ``ses`` (from the effective sample size), MALA acceptance and step ``dt``, and the
    diagnostics: ``tau`` the integrated autocorrelation time of the integrand (in MALA
    steps), ``ess`` its effective sample size, ``rhat`` split R-hat across chains,
    ``burn_in`` the steps run before the production run (pilots included) and
    ``burned_in`` whether the automatic burn-in saw the drift stop within its budget.
    ``converged`` is per node ``burned_in and rhat < RHAT_MAX``."""

    log_z: float
    se: float
    s: np.ndarray
    weights: np.ndarray
    means: np.ndarray
    ses: np.ndarray
    acceptance: np.ndarray
    dt: np.ndarray
    tau: np.ndarray | None = None
    ess: np.ndarray | None = None
    rhat: np.ndarray | None = None
    burn_in: np.ndarray | None = None
    burned_in: np.ndarray | None = None
    n_chains: int = 0
    se_method: str = ""

    @property
    def converged(self) -> np.ndarray:
        return np.asarray(self.burned_in, dtype=bool) & (np.asarray(self.rhat) < RHAT_MAX)

    def __repr__(self):
        return (f"ThermoResult(log_z={self.log_z:.6g} +- {self.se:.2g}, {self.s.size} nodes, {self.n_chains} chains, "
                f"max R-hat {np.max(self.rhat):.3f}, min ESS {np.min(self.ess):.0f})")


def thermodynamic_integration(U1, U0, x0, *, log_z0: float | None = None, temperature: float = 1.0,
                              nodes: int = 8, dt="auto", n_steps: int = 200, burn_in="auto", seed: int = 0,
                              box=None, progress: bool = False) -> ThermoResult:
    """``log Z_1`` of ``U1`` at ``temperature`` from a reference ``U0`` with known ``log Z_0``
    (``U0.log_partition(T)`` when not given) and exact samples ``x0`` (N, d) of its Gibbs law
    (the N chains).

    nodes : Gauss-Legendre nodes; n_steps : MALA production steps at each node (the
        integrand is recorded along them, thinned to at most ``MAX_SAVES`` records).
    dt : the MALA step, or ``"auto"``: at each node, pilot runs of ``PILOT_STEPS`` steps
        halve or double it (from the previous node's) until the acceptance is in ``ACCEPT``;
        broad laws then take long steps and relax in few of them.
    burn_in : steps at each node before the production run (after the pilots), or
        ``"auto"``: until the integrand stops drifting (module docstring), at most
        ``BURN_MAX_FACTOR * n_steps`` steps (a RuntimeWarning if that is not enough)."""
    if U1.dim != U0.dim:
        raise ValueError(f"U1 has dimension {U1.dim} but U0 has {U0.dim}")
    T = positive_float(temperature, "temperature")
    X = finite_array(x0, "x0")
    if X.ndim != 2 or X.shape[1] != U0.dim or X.shape[0] < 2:
        raise ValueError(f"x0 must hold at least 2 points of shape (N, {U0.dim}), got {X.shape}")
    lz0 = U0.log_partition(T) if log_z0 is None else float(log_z0)
    if not math.isfinite(lz0):
        raise ValueError(f"log_z0 must be finite, got {lz0}")
    n_steps = positive_int(n_steps, "n_steps")
    if n_steps < 4:
        raise ValueError(f"n_steps must be at least 4 (the integrand's autocorrelation is measured on them), "
                         f"got {n_steps}")
    auto_burn = isinstance(burn_in, str)
    if auto_burn and burn_in != "auto":
        raise ValueError(f"burn_in must be a non-negative integer or 'auto', got {burn_in!r}")
    if not auto_burn and (int(burn_in) != burn_in or burn_in < 0):
        raise ValueError(f"burn_in must be a non-negative integer or 'auto', got {burn_in!r}")
    auto = isinstance(dt, str)
    if auto and dt != "auto":
        raise ValueError(f"dt must be a positive number or 'auto', got {dt!r}")
    step = 0.01 if auto else positive_float(dt, "dt")
    s, w = gauss_legendre_01(nodes)
    N, K = X.shape[0], s.size
    alive = np.ones(N, dtype=bool)
    thin = max(1, -(-n_steps // MAX_SAVES))
    n_rec = n_steps // thin
    per_chain = np.empty((K, n_rec, N))  # the integrand along each chain's production run, per node
    means, ses, acc, steps = np.empty(K), np.empty(K), np.empty(K), np.empty(K)
    tau, ess, rhat, burned, burned_ok = np.empty(K), np.empty(K), np.empty(K), np.zeros(K, dtype=np.int64), \
        np.ones(K, dtype=bool)

    def run(Us, X, n, every, key, show=False, h=None):
        """``n`` MALA steps (of ``h``, default the current step) from X; the integrand at every
        ``every``-th step (records, N), the final X, the chains still alive, the acceptance."""
        ens = langevin(Us, X, step if h is None else h, n, method="mala", temperature=T, box=box,
                       seed=derived_seed(seed, *key), save_every=every, summaries=False, progress=show)
        P = ens.positions[1:]  # (records, N, d): the states after every, 2 every, ... steps
        alive_run = ens.status == 0
        f = (U1.value(P.reshape(-1, P.shape[2])) - U0.value(P.reshape(-1, P.shape[2]))).reshape(P.shape[:2]) / T
        f[:, ~alive_run] = 0.0  # frozen (left the box) chains: excluded below, kept finite here
        return f, ens.positions[-1], alive_run, float(ens.acceptance.mean())

    for i, si in enumerate(s):
        Us = Sum([1.0 - si, si], [U0, U1])
        if auto:  # pilot runs (valid MALA chains, moving the ensemble on) tune the step
            for k in range(PILOTS):
                ens = langevin(Us, X, step, PILOT_STEPS, method="mala", temperature=T, box=box,
                               seed=derived_seed(seed, i, 0, k), summaries=False)
                X, a = ens.positions[-1], float(ens.acceptance.mean())
                alive &= ens.status == 0
                burned[i] += PILOT_STEPS
                if ACCEPT[0] <= a <= ACCEPT[1]:
                    break
                step *= 2.0 if a > ACCEPT[1] else 0.5
            # then the step that decorrelates the integrand in the fewest steps: the acceptance
            # alone can hide chains stuck for hundreds of steps (long MALA steps rejected in the
            # tails or near a saddle), which the integrand's autocorrelation time shows
            every = max(1, TUNE_STEPS // MAX_SAVES)
            f, X, ok, _ = run(Us, X, TUNE_STEPS, every, (i, 3, 0))
            alive &= ok
            burned[i] += TUNE_STEPS
            tau_here = autocorrelation_time(f[:, alive]) * every
            for k in range(TUNE_HALVINGS):  # a trial with half the step, from the same states
                f, Xh, ok, _ = run(Us, X, TUNE_STEPS, every, (i, 3, k + 1), h=0.5 * step)
                tau_half = autocorrelation_time(f[:, alive & ok]) * every
                if not tau_half < TUNE_GAIN * tau_here:
                    break  # the trial is dropped: the chains go on from X
                X, step, tau_here = Xh, 0.5 * step, tau_half
                alive &= ok
                burned[i] += TUNE_STEPS
        steps[i] = step
        if auto_burn:
            chunk, prev, k = max(BURN_CHUNK_MIN, n_steps // 2), None, 0  # prev: chunk means per chain
            budget = BURN_MAX_FACTOR * n_steps
            while True:
                every = max(1, -(-chunk // MAX_SAVES))
                f, X, ok, _ = run(Us, X, chunk, every, (i, 1, k))
                alive &= ok
                burned[i] += chunk
                k += 1
                if alive.sum() < 2:
                    break
                fa = f[:, alive]
                long_enough = chunk >= BURN_TAU_FACTOR * autocorrelation_time(fa) * every
                cm = fa.mean(axis=0)
                if prev is not None and long_enough:
                    d = cm - prev[alive]  # paired over chains: the drift of the chunk mean
                    if abs(d.mean()) <= 2.0 * d.std(ddof=1) / math.sqrt(d.size):
                        break
                if burned[i] >= budget:
                    burned_ok[i] = False
                    break
                prev = np.zeros(N)
                prev[alive] = cm
                if not long_enough:
                    chunk = min(2 * chunk, max(BURN_CHUNK_MIN, budget - int(burned[i])))
        elif burn_in > 0:
            ens = langevin(Us, X, step, int(burn_in), method="mala", temperature=T, box=box,
                           seed=derived_seed(seed, i, 1, 0), summaries=False)
            X = ens.positions[-1]
            alive &= ens.status == 0
            burned[i] += int(burn_in)
        f, X, ok, acc[i] = run(Us, X, n_rec * thin, thin, (i, 2, 0), progress)
        alive &= ok
        per_chain[i] = f
        if alive.sum() < 2:
            raise RuntimeError("fewer than 2 particles stayed in the box: no estimate")
        fa = f[:, alive]
        tau[i] = autocorrelation_time(fa)
        ess[i] = fa.size / tau[i]
        means[i] = float(fa.mean())
        ses[i] = float(fa.std(ddof=1) / math.sqrt(ess[i]))
        rhat[i] = split_rhat(fa)
        tau[i] *= thin
    if alive.sum() < 2:
        raise RuntimeError("fewer than 2 particles stayed in the box: no estimate")
    # batch means: each alive chain's production run cut into b consecutive batches per node;
    # batch (j, c) carries sum_i w_i mean_{batch c}(f_i along chain j)
    n_alive = int(alive.sum())
    b = max(1, min(-(-MIN_BATCHES // n_alive), n_rec // 2))
    L = n_rec // b
    G = np.einsum("i,icj->cj", w, per_chain[:, : b * L, alive].reshape(K, b, L, n_alive).mean(axis=2))
    q = G.ravel()
    se = float(q.std(ddof=1) / math.sqrt(q.size))
    method = (f"batch means: {n_alive} independent chains" + (f" x {b} batches of {L * thin} steps" if b > 1 else "")
              + f", weighted over {K} nodes")
    bad = ~(burned_ok & (rhat < RHAT_MAX))
    if np.any(bad):
        j = np.flatnonzero(bad)
        warnings.warn(f"thermodynamic_integration: the chains may not have reached rho_s at node(s) s = "
                      f"{np.round(s[j], 4).tolist()} (split R-hat {np.round(rhat[j], 3).tolist()}, burn-in "
                      f"{burned[j].tolist()} steps{'' if burned_ok[j].all() else ', budget exhausted'}); "
                      "log Z may be biased: raise n_steps", RuntimeWarning, stacklevel=2)
    return ThermoResult(lz0 - float(q.mean()), se, s, w, means, ses, acc, steps, tau, ess, rhat, burned, burned_ok,
                        n_alive, method)
