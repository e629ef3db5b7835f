"""Characteristics of the deterministic gradient flow, with their log-densities.

Along the forward flow ``dX/dt = -grad U(X)`` the continuity equation gives
``d/dt log rho_t(X_t) = lap U(X_t)``.  Hence

* forward: ``log rho_t(X_t) = log rho_0(X_0) + int_0^t lap U(X_s) ds``;
* backward: the density at a point ``x`` is ``log rho_t(x) = log rho_0(z_t) +
  int_0^t lap U(z_s) ds`` with ``dz/ds = +grad U(z)``, ``z_0 = x``.

:func:`integrate_characteristics` integrates the augmented ODE
``(z, l)' = (sign * grad U(z), lap U(z))`` for many points at once with an
adaptive Dormand-Prince 5(4) pair, compiled by numba once for every energy (the
energy's kernels are passed to it) and parallel over points, recording
``(z, l)`` at every requested time (steps are clipped to hit them).  A point
whose step size underflows is an error naming the point and the time.

An energy without numba kernels (Python callables: NumPy, torch, JAX; or a sum with such a
term) takes the batched path :func:`_vectorised` instead: Dormand-Prince 8(5,3) with per-point
error control, the outputs from its interpolant, every stage one call of the energy on all
unfinished points at once (gradient and Laplacian from one autodiff graph for torch and JAX).

Time-dependent energies (:class:`~fokkerplanck.energies.paths.EnergyPath` with kernels): the same
integration with ``grad U(z, u)``, ``lap U(z, u)`` at every stage's own path time
``u = a + b s`` (``duration`` maps physical time to the path's ``[0, 1]``).  Forward, one
integration gives every output time; backward, the density at time ``t`` needs the
characteristic run from ``t`` down to 0 through the energies of that interval, so each
output time has its own integration (``u = (t - s) / duration``).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
from numba import prange, types

from fokkerplanck._core.jit import array_type, call_compiled, call_with, function_type, jit, kernel_input
from fokkerplanck.energies.base import Sum
from fokkerplanck.energies.paths import ConstantPath, EnergyPath

__all__ = ["CharacteristicsError", "integrate_characteristics"]


# Dormand-Prince 5(4) tableau
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_A = np.array([
    [0, 0, 0, 0, 0, 0],
    [1 / 5, 0, 0, 0, 0, 0],
    [3 / 40, 9 / 40, 0, 0, 0, 0],
    [44 / 45, -56 / 15, 32 / 9, 0, 0, 0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
])
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_E = _B - np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])

STATUS_OK, STATUS_ESCAPED, STATUS_FAILED = 0, 1, 2
EPS64 = float(np.finfo(np.float64).eps)

# Dormand-Prince 8(5,3) (E. Hairer, S. P. Norsett, G. Wanner, Solving Ordinary Differential
# Equations I, 2nd ed., Springer 1993; the code DOP853): the nonzero entries of the stage
# rows, the 8th-order weights and the 5th- and 3rd-order error estimators.  Stage 12 of the
# code is f at the new state, the next step's first stage.
_A8 = (
    {},
    {0: 0.05260015195876773},
    {0: 0.0197250569845379, 1: 0.0591751709536137},
    {0: 0.02958758547680685, 2: 0.08876275643042054},
    {0: 0.2413651341592667, 2: -0.8845494793282861, 3: 0.924834003261792},
    {0: 0.037037037037037035, 3: 0.17082860872947386, 4: 0.12546768756682242},
    {0: 0.037109375, 3: 0.17025221101954405, 4: 0.06021653898045596, 5: -0.017578125},
    {0: 0.03709200011850479, 3: 0.17038392571223998, 4: 0.10726203044637328, 5: -0.015319437748624402,
     6: 0.008273789163814023},
    {0: 0.6241109587160757, 3: -3.3608926294469414, 4: -0.868219346841726, 5: 27.59209969944671,
     6: 20.154067550477894, 7: -43.48988418106996},
    {0: 0.47766253643826434, 3: -2.4881146199716677, 4: -0.590290826836843, 5: 21.230051448181193,
     6: 15.279233632882423, 7: -33.28821096898486, 8: -0.020331201708508627},
    {0: -0.9371424300859873, 3: 5.186372428844064, 4: 1.0914373489967295, 5: -8.149787010746927,
     6: -18.52006565999696, 7: 22.739487099350505, 8: 2.4936055526796523, 9: -3.0467644718982196},
    {0: 2.273310147516538, 3: -10.53449546673725, 4: -2.0008720582248625, 5: -17.9589318631188,
     6: 27.94888452941996, 7: -2.8589982771350235, 8: -8.87285693353063, 9: 12.360567175794303,
     10: 0.6433927460157636},
)
_B8 = {0: 0.054293734116568765, 5: 4.450312892752409, 6: 1.8915178993145003, 7: -5.801203960010585,
       8: 0.3111643669578199, 9: -0.1521609496625161, 10: 0.20136540080403034, 11: 0.04471061572777259}
_E5 = {0: 0.01312004499419488, 5: -1.2251564463762044, 6: -0.4957589496572502, 7: 1.6643771824549864,
       8: -0.35032884874997366, 9: 0.3341791187130175, 10: 0.08192320648511571, 11: -0.022355307863886294}
_E3 = {0: -0.18980075407240762, 5: 4.450312892752409, 6: 1.8915178993145003, 7: -5.801203960010585,
       8: -0.4226823213237919, 9: -0.1521609496625161, 10: 0.20136540080403034, 11: 0.02265179219836082}
# the three stages of its interpolant (stages 13-15 of the code) and the interpolant's
# coefficients of those stages (rows 3-6 of its seventh-degree polynomial)
_A_DENSE = (
    {0: 0.056167502283047954, 6: 0.25350021021662483, 7: -0.2462390374708025, 8: -0.12419142326381637,
     9: 0.15329179827876568, 10: 0.00820105229563469, 11: 0.007567897660545699, 12: -0.008298},
    {0: 0.03183464816350214, 5: 0.028300909672366776, 6: 0.053541988307438566, 7: -0.05492374857139099,
     10: -0.00010834732869724932, 11: 0.0003825710908356584, 12: -0.00034046500868740456,
     13: 0.1413124436746325},
    {0: -0.42889630158379194, 5: -4.697621415361164, 6: 7.683421196062599, 7: 4.06898981839711,
     8: 0.3567271874552811, 12: -0.0013990241651590145, 13: 2.9475147891527724, 14: -9.15095847217987},
)
_D_DENSE = (
    {0: -8.428938276109013, 5: 0.5667149535193777, 6: -3.0689499459498917, 7: 2.38466765651207,
     8: 2.117034582445028, 9: -0.871391583777973, 10: 2.2404374302607883, 11: 0.6315787787694688,
     12: -0.08899033645133331, 13: 18.148505520854727, 14: -9.194632392478356, 15: -4.436036387594894},
    {0: 10.427508642579134, 5: 242.28349177525817, 6: 165.20045171727028, 7: -374.5467547226902,
     8: -22.113666853125306, 9: 7.733432668472264, 10: -30.674084731089398, 11: -9.332130526430229,
     12: 15.697238121770845, 13: -31.139403219565178, 14: -9.35292435884448, 15: 35.81684148639408},
    {0: 19.985053242002433, 5: -387.0373087493518, 6: -189.17813819516758, 7: 527.8081592054236,
     8: -11.57390253995963, 9: 6.8812326946963, 10: -1.0006050966910838, 11: 0.7777137798053443,
     12: -2.778205752353508, 13: -60.19669523126412, 14: 84.32040550667716, 15: 11.99229113618279},
    {0: -25.69393346270375, 5: -154.18974869023643, 6: -231.5293791760455, 7: 357.6391179106141,
     8: 93.40532418362432, 9: -37.45832313645163, 10: 104.0996495089623, 11: 29.8402934266605,
     12: -43.53345659001114, 13: 96.32455395918828, 14: -39.17726167561544, 15: -149.72683625798564},
)
# The batched path controls its steps at DENSE_SAFETY times the asked tolerances, so that the
# outputs interpolated inside its steps meet them too: on a tanh MLP energy at rtol 1e-10 the
# interpolant was 1.2e-10 off (relative to the largest density) where the steps' own ends were
# 1.6e-11; at a tenth it is 1.1e-11, for 17 % more evaluations (steps clipped at every output,
# the other way to the same accuracy, took 69 % more at 11 outputs and far more at 51)
DENSE_SAFETY = 0.1
MAX_BATCH = 1 << 18  # points per batched call of a callable energy (bounds the 12 stages' memory)


class CharacteristicsError(RuntimeError):
    """A characteristic could not be integrated to the requested tolerance."""


def _build(kernels):
    """The compiled integration around path kernels ``grad(x, u, q, out)``, ``lap(x, u, q)``
    (:class:`~fokkerplanck.energies.paths.PathKernels`; a static energy's through
    :class:`~fokkerplanck.energies.paths.ConstantPath`): one compiled kernel
    (:func:`_characteristics`) for every energy, the kernels passed to it by address."""
    return functools.partial(_run_characteristics, kernels.grad, kernels.lap)


def _run_characteristics(grad, lap, X0, times, sign, q, rtol, atol, centre, r_escape, h0, ua, ub):
    x, qt = array_type(np.float64, 1), array_type(q.dtype, 1)
    fntypes = (function_type(types.void, x, types.float64, qt, x), function_type(types.float64, x, types.float64, qt))
    return call_with(_characteristics, (grad, lap), fntypes, kernel_input(X0), kernel_input(times), sign,
                     kernel_input(q), rtol, atol, kernel_input(centre), r_escape, h0, ua, ub)


@jit(cache=True, parallel=True)
def _characteristics(grad, lap, X0, times, sign, p, rtol, atol, centre, r_escape, h0, ua, ub):
    """Dormand-Prince 5(4) along every characteristic, with a path's one-point kernels
    ``grad(x, u, q, out)``, ``lap(x, u, q)`` at ``u = ua + ub t`` clipped to [0, 1]; see
    :func:`integrate_characteristics`."""
    n, d = X0.shape
    nt = times.shape[0]
    Z = np.empty((nt, n, d))
    Lg = np.empty((nt, n))
    status = np.zeros(n, dtype=np.int64)
    fail_t = np.zeros(n)
    first_escaped = np.full(n, nt, dtype=np.int64)
    for i in prange(n):
        y = np.empty(d + 1)
        y[:d] = X0[i]
        y[d] = 0.0
        K = np.empty((7, d + 1))
        ytmp = np.empty(d + 1)
        ynew = np.empty(d + 1)
        g = np.empty(d)
        t = 0.0
        h = h0
        j = 0
        # outputs at t = 0
        while j < nt and times[j] <= 0.0:
            Z[j, i] = y[:d]
            Lg[j, i] = 0.0
            j += 1
        # first stage
        u = min(1.0, max(0.0, ua))
        grad(y[:d], u, p, g)
        for a in range(d):
            K[0, a] = sign * g[a]
        K[0, d] = lap(y[:d], u, p)
        while j < nt:
            # escape: beyond r_escape from the centre the caller knows the answer
            r2 = 0.0
            for a in range(d):
                r2 += (y[a] - centre[a]) ** 2
            if r2 > r_escape * r_escape:
                status[i] = 1
                first_escaped[i] = j
                for jj in range(j, nt):
                    Z[jj, i] = y[:d]
                    Lg[jj, i] = y[d]
                break
            hs = min(h, times[j] - t)
            for s in range(1, 7):
                for a in range(d + 1):
                    acc = y[a]
                    for q in range(s):
                        acc += hs * _A[s, q] * K[q, a]
                    ytmp[a] = acc
                u = min(1.0, max(0.0, ua + ub * (t + _C[s] * hs)))
                grad(ytmp[:d], u, p, g)
                for a in range(d):
                    K[s, a] = sign * g[a]
                K[s, d] = lap(ytmp[:d], u, p)
            # ytmp now holds the 5th-order solution (FSAL: K[6] is f(ytmp))
            err = 0.0
            finite = True
            for a in range(d + 1):
                ynew[a] = ytmp[a]
                e = 0.0
                for q in range(7):
                    e += hs * _E[q] * K[q, a]
                sc = atol + rtol * max(abs(y[a]), abs(ynew[a]))
                err = max(err, abs(e) / sc)
                if not np.isfinite(ynew[a]):
                    finite = False
            if not finite:
                err = 1e10
            if err <= 1.0:
                t += hs
                for a in range(d + 1):
                    y[a] = ynew[a]
                    K[0, a] = K[6, a]
                while j < nt and times[j] - t <= 1e-13 * max(1.0, times[j]):
                    Z[j, i] = y[:d]
                    Lg[j, i] = y[d]
                    j += 1
                fac = 5.0 if err == 0.0 else min(5.0, 0.9 * err ** -0.2)
                if hs == h:
                    h = h * fac
                else:
                    h = max(h, hs * fac)
            else:
                h = hs * max(0.1, 0.9 * err ** -0.2)
                if h < 1e-13 * max(1.0, t):
                    status[i] = 2
                    fail_t[i] = t
                    for jj in range(j, nt):
                        Z[jj, i] = np.nan
                        Lg[jj, i] = np.nan
                    break
    return Z, Lg, status, fail_t, first_escaped


def integrate_characteristics(energy, X0, times, *, direction: str = "backward", rtol: float = 1e-10,
                              atol: float = 1e-12, centre=None, r_escape: float = np.inf,
                              duration: float | None = None):
    """Integrate ``dz/ds = sign grad U(z)``, ``dl/ds = lap U(z)`` from every row of
    ``X0`` (N, d); ``sign = +1`` for ``direction="backward"`` (characteristics of
    the density at fixed points), ``-1`` for ``"forward"`` (the flow map).

    Returns ``Z`` (nt, N, d), ``L`` (nt, N) at ``times`` and ``escaped`` (nt, N)
    bool: True from the first record at which the point had left the ball
    ``|z - centre| > r_escape`` (it is stopped there; those records hold the
    escape state).  Raises
    :class:`CharacteristicsError` naming the first point whose step size
    underflowed, never returns a silent NaN.

    ``energy`` may be an :class:`~fokkerplanck.energies.paths.EnergyPath` with kernels over the
    physical times ``[0, duration]`` (module docstring); ``times`` must then lie there.
    """

    X0 = kernel_input(np.asarray(X0, dtype=float))   # once, not at every output time below
    times = np.asarray(times, dtype=float)
    sign = {"backward": 1.0, "forward": -1.0}.get(direction)
    if sign is None:
        raise ValueError(f"direction must be 'backward' or 'forward', got {direction!r}")
    centre = np.zeros(X0.shape[1]) if centre is None else np.asarray(centre, dtype=float)
    h0 = 1e-3 if times.size == 0 or times.max() == 0 else min(1e-3, 1e-2 * times.max())
    opts = (float(rtol), float(atol), centre, float(r_escape), h0)
    if isinstance(energy, EnergyPath):
        if duration is None:
            raise ValueError("a time-dependent energy needs duration= (the physical time of the whole path)")
        duration = float(duration)
        if not (duration > 0 and np.isfinite(duration)):
            raise ValueError(f"duration must be a positive number, got {duration!r}")
        if times.size and (times.min() < 0 or times.max() > duration * (1 + 1e-12)):
            raise ValueError(f"times must lie in [0, duration = {duration:g}]")
        run = _build(energy.path_kernels)  # NoKernelsError for a path of callables, with the reason
        q = energy.path_params
        if direction == "forward":
            Z, L, status, fail_t, first_escaped = call_compiled(run, X0, times, sign, q, *opts, 0.0, 1.0 / duration)
            escaped = np.arange(times.size)[:, None] >= first_escaped[None, :]
        else:  # one integration per output time, from t down to 0
            parts = [call_compiled(run, X0, np.array([tj]), sign, q, *opts, tj / duration, -1.0 / duration)
                     for tj in times]
            n = X0.shape[0]
            Z = np.concatenate([o[0] for o in parts]) if parts else np.empty((0, n, X0.shape[1]))
            L = np.concatenate([o[1] for o in parts]) if parts else np.empty((0, n))
            status = np.max([o[2] for o in parts], axis=0) if parts else np.zeros(n, dtype=np.int64)
            fail_t = np.max([o[3] for o in parts], axis=0) if parts else np.zeros(n)
            escaped = np.array([o[2] == STATUS_ESCAPED for o in parts]).reshape(times.size, n)
    else:
        if energy.has_kernels:
            run = _build(ConstantPath(energy).path_kernels)
            extra = (0.0, 0.0)
        else:
            run, extra = _vectorised(energy), ()
            rtol, atol = _precision_floor(energy, rtol, atol)
            opts = (float(rtol), float(atol), *opts[2:])
        Z, L, status, fail_t, first_escaped = call_compiled(run, X0, times, sign, energy.params, *opts, *extra)
        escaped = np.arange(times.size)[:, None] >= first_escaped[None, :]
    bad = np.flatnonzero(status == STATUS_FAILED)
    if bad.size:
        i = bad[0]
        raise CharacteristicsError(
            f"{bad.size} characteristic(s) failed to converge (step size underflow); first: start point "
            f"{X0[i].tolist()} at s = {fail_t[i]:.6g} ({direction}, rtol={rtol:g}, atol={atol:g})")
    return Z, L, escaped


def _precision_floor(energy, rtol, atol):
    """``(rtol, atol)`` raised, with a warning, to what an energy computing in less than float64
    can meet (a float32 torch module: ``rtol >= 100 eps = 1.2e-5``, ``atol >= rtol / 100``):
    below it the error estimates are rounding noise and the steps shrink without end."""
    terms = energy.terms if isinstance(energy, Sum) else (energy,)
    eps = max(getattr(t, "precision_eps", EPS64) for t in terms)
    if eps <= EPS64:
        return rtol, atol
    floor = 100.0 * eps
    if rtol < floor or atol < floor / 100:
        new = (max(rtol, floor), max(atol, floor / 100))
        warnings.warn(f"the energy computes with precision {eps:.2g} (not float64): the characteristics' "
                      f"tolerances rtol={rtol:g}, atol={atol:g} are raised to rtol={new[0]:.2g}, atol={new[1]:.2g} "
                      "(give a float64 module for tighter ones)", RuntimeWarning, stacklevel=3)
        return new
    return rtol, atol


def _grad_lap_fn(energy):
    """``X -> (grad U(X), lap U(X))`` for an energy without numba kernels: one fused call where
    the energy has one (:meth:`~fokkerplanck.energies.callables.CallableEnergy._grad_lap`: one
    autodiff graph of a torch module or a JAX function gives both), term by term for a sum,
    else the two calls."""
    if isinstance(energy, Sum):
        parts = [(c, _grad_lap_fn(t)) for c, t in zip(energy.coefs, energy.terms)]

        def summed(X):
            G, L = 0.0, 0.0
            for c, f in parts:
                g, lap = f(X)
                G, L = G + c * g, L + c * lap
            return G, L
        return summed
    fused = getattr(energy, "_grad_lap", None)
    if fused is not None:
        return fused
    return lambda X: (energy._grad(X), energy._lap(X))


def _vectorised(energy):
    """The integration for an energy without numba kernels (Python callables: NumPy
    functions, torch modules, JAX functions): all points together, in batched calls.

    The scheme is Dormand-Prince 8(5,3) (Hairer's DOP853; tableau ``_A8``, ``_B8``, ``_E5``,
    ``_E3``), with its seventh-order interpolant at the output times inside a step: an
    evaluation of a network costs far more than the bookkeeping, and at the default
    ``rtol = 1e-10`` the eighth-order pair takes about 2.3 times fewer evaluations than the
    fifth-order one of the compiled path, whose steps also stop at every output time.

    Error control is per point, with the compiled path's norm: every point keeps its own
    time and step size, and accepts its step when ``err = e5^2 / sqrt(e5^2 + e3^2 / 100) <=
    1``, with ``e5``, ``e3`` the max over the components of ``|estimate_a| / (atol' + rtol'
    max(|y_a|, |y_new,a|))`` for the fifth- and third-order estimates (Hairer's combination;
    the max norm where DOP853 takes the RMS, so that no component escapes), at ``rtol' =
    DENSE_SAFETY rtol``, ``atol' = DENSE_SAFETY atol``: the interpolated outputs then meet
    the asked tolerances as the step ends do (module constant's comment).  Each round
    attempts one step of every unfinished point with ONE batched call of the gradient and
    Laplacian per stage (fused where the energy allows:
    :meth:`~fokkerplanck.energies.callables.CallableEnergy._grad_lap`), in chunks of at most
    ``MAX_BATCH`` points; the number of point evaluations is the sum of the points' own
    step counts, and the bookkeeping is array operations."""
    grad_lap = _grad_lap_fn(energy)
    A, B, E5, E3, A_DENSE, D_DENSE = _A8, _B8, _E5, _E3, _A_DENSE, _D_DENSE

    def f(Y, sign, out):
        G, L = grad_lap(Y[:, :-1])
        out[:, :-1] = G
        if sign != 1.0:
            out[:, :-1] *= sign
        out[:, -1] = L

    def combine(K, coef, hc):
        acc = None
        for q, c in coef.items():
            acc = c * K[q] if acc is None else acc + c * K[q]
        return hc * acc

    def run(X0, times, sign, p, rtol, atol, centre, r_escape, h0):
        n, d = X0.shape
        nt = times.shape[0]
        rtol, atol = rtol * DENSE_SAFETY, atol * DENSE_SAFETY
        Z, Lg = np.empty((nt, n, d)), np.empty((nt, n))
        status, fail_t = np.zeros(n, dtype=np.int64), np.zeros(n)
        first_escaped = np.full(n, nt, dtype=np.int64)
        Y = np.concatenate([X0, np.zeros((n, 1))], axis=1)
        t, h = np.zeros(n), np.full(n, float(h0))
        j0 = int(np.sum(times <= 0.0))
        Z[:j0], Lg[:j0] = X0, 0.0
        j = np.full(n, j0)
        hit_tol = 1e-13 * np.maximum(1.0, times)
        t_end = times[-1] if nt else 0.0
        K0 = np.empty((n, d + 1))       # f at each point's current state
        live = np.flatnonzero(j < nt)

        def first_step(idx):
            """Each point's first step from the size of ``f`` and of its change (Hairer, Norsett,
            Wanner, section II.4; max norms): one evaluation instead of growing from ``h0``
            at most five-fold per step."""
            y = Y[idx]
            f0 = np.empty_like(y)
            f(y, sign, f0)
            K0[idx] = f0
            sc = atol + rtol * np.abs(y)
            d0, d1 = np.abs(y / sc).max(axis=1), np.abs(f0 / sc).max(axis=1)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                hh = np.where((d0 > 1e-5) & (d1 > 1e-5), 0.01 * d0 / d1, 1e-6)
                hh = np.minimum(hh, t_end - t[idx])
                f1 = np.empty_like(y)
                f(y + hh[:, None] * f0, sign, f1)
                d2 = np.abs((f1 - f0) / sc).max(axis=1) / hh
                dm = np.maximum(d1, d2)
                h1 = np.where(dm <= 1e-15, np.maximum(1e-6, hh * 1e-3), (0.01 / dm) ** 0.125)
                h[idx] = np.where(np.isfinite(h1), np.minimum(100 * hh, h1), h0)

        def attempt(idx):
            """One step of the points ``idx``: accept or reject each; the outputs inside an
            accepted step from the step's interpolant, one at its end from the step itself."""
            m = idx.size
            y = Y[idx]
            t_old = t[idx]
            hs = np.minimum(h[idx], t_end - t_old)
            hc = hs[:, None]
            K = np.empty((16, m, d + 1))
            K[0] = K0[idx]
            with np.errstate(invalid="ignore", over="ignore"):
                for s_ in range(1, 12):
                    f(y + combine(K, A[s_], hc), sign, K[s_])
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                ynew = y + combine(K, B, hc)
                sc = atol + rtol * np.maximum(np.abs(y), np.abs(ynew))
                e5 = (np.abs(combine(K, E5, hc)) / sc).max(axis=1)
                e3 = (np.abs(combine(K, E3, hc)) / sc).max(axis=1)
                den = np.sqrt(e5 * e5 + 0.01 * e3 * e3)
                err = np.where(den > 0, e5 * e5 / np.where(den > 0, den, 1.0), 0.0)
                err = np.where(np.all(np.isfinite(ynew), axis=1) & np.isfinite(err), err, 1e10)
                fac_ok = np.where(err == 0.0, 5.0, np.minimum(5.0, 0.9 * err ** -0.125))
                fac_bad = np.maximum(0.1, 0.9 * err ** -0.125)
            ok = err <= 1.0
            a, r = idx[ok], idx[~ok]
            # accepted: advance; f at the new state is the next step's first stage and the
            # interpolant's last node
            ha, hsa = h[a], hs[ok]
            t_new = t_old[ok] + hsa
            nxt = times[np.minimum(j[a], nt - 1)]
            inside = (j[a] < nt) & (nxt < t_new - hit_tol[np.minimum(j[a], nt - 1)])
            going = t_new < t_end - hit_tol[-1]
            kn = np.flatnonzero(inside | going)
            Ka = K[:, ok]
            if kn.size:
                knew = np.empty((kn.size, d + 1))
                f(ynew[ok][kn], sign, knew)
                Ka[12, kn] = knew
                K0[a[kn]] = knew
            t[a] = t_new
            Y[a] = ynew[ok]
            h[a] = np.where(hsa == ha, ha * fac_ok[ok], np.maximum(ha, hsa * fac_ok[ok]))
            di = np.flatnonzero(inside)
            if di.size:
                dense_outputs(a[di], Ka[:, di], y[ok][di], ynew[ok][di], t_old[ok][di], hsa[di])
            while a.size:  # the output at the end of the step (several when output times coincide)
                a = a[j[a] < nt]
                a = a[times[j[a]] - t[a] <= hit_tol[j[a]]]
                Z[j[a], a], Lg[j[a], a] = Y[a, :d], Y[a, d]
                j[a] += 1
            # rejected: a smaller step, or a failure once it underflows
            h[r] = hs[~ok] * fac_bad[~ok]
            under = r[h[r] < 1e-13 * np.maximum(1.0, t[r])]
            if under.size:
                status[under], fail_t[under] = STATUS_FAILED, t[under]
                after = np.arange(nt)[:, None] >= j[under][None, :]
                Z[:, under] = np.where(after[:, :, None], np.nan, Z[:, under])
                Lg[:, under] = np.where(after, np.nan, Lg[:, under])
                j[under] = nt

        def dense_outputs(ix, K, y, ynew, t_old, hs):
            """The outputs strictly inside the accepted steps of the points ``ix`` from DOP853's
            seventh-order interpolant (three more stages; ``K[12]`` is f at the new state)."""
            hc = hs[:, None]
            with np.errstate(invalid="ignore", over="ignore"):
                for s_ in range(13, 16):
                    f(y + combine(K, A_DENSE[s_ - 13], hc), sign, K[s_])
            dy = ynew - y
            F = [dy, hc * K[0] - dy, 2 * dy - hc * (K[12] + K[0])] + [combine(K, D, hc) for D in D_DENSE]
            t_new = t_old + hs
            sel = np.arange(ix.size)
            while sel.size:
                k = ix[sel]
                sel = sel[(j[k] < nt)]
                k = ix[sel]
                sel = sel[times[j[k]] < t_new[sel] - hit_tol[j[k]]]
                if sel.size == 0:
                    break
                k = ix[sel]
                x = ((times[j[k]] - t_old[sel]) / hs[sel])[:, None]
                v = np.zeros((sel.size, d + 1))
                for i_, Fi in enumerate(reversed(F)):
                    v += Fi[sel]
                    v *= x if i_ % 2 == 0 else 1 - x
                v += y[sel]
                Z[j[k], k], Lg[j[k], k] = v[:, :d], v[:, d]
                j[k] += 1

        for part in np.array_split(live, -(-live.size // MAX_BATCH)) if live.size else ():
            first_step(part)
        while live.size:
            # escape: beyond r_escape from the centre the caller knows the answer
            out = np.sum((Y[live, :d] - centre) ** 2, axis=1) > r_escape ** 2
            if out.any():
                i = live[out]
                status[i], first_escaped[i] = STATUS_ESCAPED, j[i]
                after = np.arange(nt)[:, None] >= j[i][None, :]
                Z[:, i] = np.where(after[:, :, None], Y[i, :d][None], Z[:, i])
                Lg[:, i] = np.where(after, Y[i, d][None], Lg[:, i])
                live = live[~out]
            for part in np.array_split(live, -(-live.size // MAX_BATCH)) if live.size else ():
                attempt(part)
            live = live[j[live] < nt]
        return Z, Lg, status, fail_t, first_escaped

    return run
