"""Checks of homotopy paths and their schedules."""
from __future__ import annotations

import math

import numpy as np

import particles.annealed as PA
from fokkerplanck import densities, energies as E
from fokkerplanck.app.verify.framework import Check, Report, at_least, at_most, near, register
from fokkerplanck.energies.paths import LinearHomotopy, VPFBHomotopy, VPFBSchedule
from fokkerplanck.flows.fokker_planck import FokkerPlanck
from fokkerplanck.flows.paths import solve_path, solve_path_continuity
from fokkerplanck.flows.potential_flow import (
    boltzmann_residual,
    frozen_flow,
    gaussian_velocity_error,
    homotopy_kl,
    potential_flow,
    potential_flow_particles,
)
from fokkerplanck.grid import Grid
from fokkerplanck.wasserstein import gaussian_w2_nd, w2_linearised


@register(one_thread=True)
def check_homotopy(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Time-dependent energies and density homotopies: the VPFB homotopy with prior
    std w != likelihood std v (w = 1 and w != 1) against the tempered posterior q(x) N(xbar; x, v^2 I)^t, and its
    time derivative; the density-weighted Poisson solve at second order against the Gaussian
    potential; homotopy matching by the grid potential flow and by particles; the moving-OU law
    by the time-dependent Fokker-Planck solver; the stationary-Boltzmann claim; ODE vs
    Langevin."""
    from scipy.integrate import solve_ivp  # local: ~0.1 s of every fpk start-up, for this check only
    from scipy.special import logsumexp

    out = []
    data = np.array([[1.0, 2.0], [-2.0, 0.5], [0.0, -1.5]])
    X = np.random.default_rng(0).normal(size=(200, 2)) * 2
    Xs = np.random.default_rng(2).normal(size=(300, 2)) * 2
    # prior and likelihood std differ (swapping them changes every law below), and the prior std is
    # 1 and then not 1 (a w^2 dropped from a formula changes nothing at w = 1)
    for w, v in ((1.3, 0.8), (1.0, 1.4)):
        H = VPFBHomotopy(data, w, v)
        # rho(x | xbar, t) ~ N(x; 0, w^2 I) N(xbar; x, v^2 I)^t: precision 1/w^2 + t/v^2, mean (t/v^2) xbar / precision
        err = 0.0
        for t in (0.0, 0.3, 0.7, 1.0):
            prec = 1 / w**2 + t / v**2
            comp = (-0.5 * prec * np.sum((X[:, None, :] - (t / v**2 / prec) * data[None]) ** 2, axis=2)
                    + np.log(prec / (2 * np.pi)) - np.log(len(data)))   # d = 2: log of prec^{d/2} / (2 pi)^{d/2}
            err = max(err, float(np.abs(H.logpdf(X, t) - logsumexp(comp, axis=1)).max()))
        # round-off: measured 1e-15
        out.append(at_most(f"VPFB homotopy (w = {w:g}, v = {v:g}): max |log rho_bar - the tempered-posterior "
                           "mixture|, t = 0, 0.3, 0.7, 1", err, 1e-12))
        e = 1e-5
        fd = (H.logpdf(X, 0.4 + e) - H.logpdf(X, 0.4 - e)) / (2 * e)
        # central difference: O(e^2) truncation and round-off eps / e, measured 4e-10 .. 9e-10
        out.append(at_most(f"VPFB homotopy (w = {w:g}, v = {v:g}): max |d_t log rho_bar - central difference|",
                           np.abs(H.dt_logpdf(X, 0.4) - fd).max(), 1e-8))
        kerr = max(float(np.abs(H.eval_path_kernels(Xs, t)[k] - f(Xs)).max())
                   for t in (0.0, 0.45, 1.0) for k, f in (("value", H.at(t).value), ("grad", H.at(t).grad),
                                                          ("lap", H.at(t).laplacian)))
        # round-off: measured 3e-14
        out.append(at_most(f"kernels with t: VPFB path kernels (w = {w:g}, v = {v:g}) vs the frozen mixture at(t) "
                           "(value, grad, lap)", kerr, 1e-12))

    H1 = VPFBHomotopy(np.array([[1.0, 0.5]]), 1.0, 0.5)
    errs = [gaussian_velocity_error(H1, Grid([(-5, 5)] * 2, cells), 0.3) for cells in (32, 64)]
    order = float(np.log2(errs[0] / errs[1]))
    out.append(near("weighted Poisson: grad Phi vs the Gaussian closed form, 32 -> 64 cells: observed order", order,
                    2.0, 0.2, f"weighted L1 errors {errs[0]:.2e}, {errs[1]:.2e}", strict=True))

    times = np.linspace(0, 1, 3)
    kls, w2s = [], []
    for cells in (32, 64):
        g = Grid([(-6, 6)] * 2, cells)
        dens, _ = potential_flow(H, g, times)
        kls.append(homotopy_kl(H, g, dens, times)[-1])
        w2s.append(w2_linearised(g, dens[-1], g.density_from_logpdf(lambda Y: H.logpdf(Y, 1.0))))
    out.append(at_most("homotopy matching: KL(rho_Phi(1) || rho_bar(1)), grid potential flow on 64^2 (32^2: "
                       f"{kls[0]:.2e})", kls[1], 3e-5))
    order = float(np.log2(w2s[0] / w2s[1]))
    # pre-asymptotic on 32^2 (measured 1.75): the window keeps first order (1) out
    out.append(near("homotopy matching: W2(rho_Phi(1), rho_bar(1)) (linearised), 32 -> 64 cells: observed order",
                    order, 2.0, 0.5, f"W2 {w2s[0]:.2e}, {w2s[1]:.2e}", strict=True))
    g = Grid([(-5, 5)] * 2, 64)
    bars = [g.density_from_logpdf(lambda Y, t=t: H1.logpdf(Y, t)) for t in (0.5, 0.6)]
    exact = gaussian_w2_nd(H1.mu(0.5) * H1.data[0], H1.sigma2(0.5) * np.eye(2),
                           H1.mu(0.6) * H1.data[0], H1.sigma2(0.6) * np.eye(2))
    out.append(at_most("W2(rho_bar(0.5), rho_bar(0.6)), one data point, 64^2 (linearised): relative error vs the "
                       "Gaussian closed form", abs(w2_linearised(g, *bars) - exact) / exact, 1e-2,
                       f"closed form {exact:.5f}"))
    pf = potential_flow_particles(H, Grid([(-6, 6)] * 2, 64), times, 20000 if quick else 100000, dt=0.02, seed=1)
    # the particles follow the 64^2 grid's velocity: its own KL at t = 1 (kls[1]) is the bias allowed
    out.append(at_most("homotopy matching, particles (tracked log-density): max_{t>0} |KL| - 4 se",
                       float(np.max(np.abs(pf.kl[1:]) - 4 * pf.kl_se[1:])), kls[1],
                       f"KL(1) = {pf.kl[-1]:.2e} +- {pf.kl_se[-1]:.1e}; tolerance: the grid potential flow's KL on "
                       "the same 64^2 grid"))

    A0, m0 = np.array([[1.0, 0.0], [0.0, 0.5]]), np.zeros(2)
    A1, m1 = np.array([[3.0, 0.8], [0.8, 2.0]]), np.array([1.5, -1.0])
    T, D = 0.7, 2.0

    def rhs(s, y):
        u = s / D
        A, b = (1 - u) * A0 + u * A1, (1 - u) * A0 @ m0 + u * A1 @ m1
        S = y[2:].reshape(2, 2)
        return np.concatenate([-A @ y[:2] + b, (-A @ S - S @ A.T + 2 * T * np.eye(2)).ravel()])
    ref = solve_ivp(rhs, [0, D], np.concatenate([[-1.0, 1.0], (0.5 * np.eye(2)).ravel()]), rtol=1e-12, atol=1e-13,
                    t_eval=[D]).y[:, -1]
    path = LinearHomotopy(E.Quadratic(A0, mean=m0), E.Quadratic(A1, mean=m1))
    g = Grid([(-6, 6)] * 2, 96)
    sol = solve_path(path, g, densities.Gaussian([-1.0, 1.0], 0.5 * np.eye(2)), [0, D], temperature=T, duration=D, tol=1e-4)
    w = sol.densities[-1].ravel() * g.cell_volume
    out.append(at_most("time-dependent Fokker-Planck (moving OU), 96^2: max |mean - moment ODE|",
                       float(np.abs(w @ g.points - ref[:2]).max()), 6e-3,
                       f"{sol.steps} steps, {sol.rejected} rejected"))

    ref0 = solve_ivp(lambda s, y: rhs(s, y) - np.concatenate([[0, 0], 2 * T * np.eye(2).ravel()]), [0, D],
                     np.concatenate([[-1.0, 1.0], (0.5 * np.eye(2)).ravel()]), rtol=1e-12, atol=1e-13, t_eval=[D]).y[:, -1]
    exact0 = densities.Gaussian(ref0[:2], ref0[2:].reshape(2, 2))
    g = Grid([(-5, 5)] * 2, 40)
    lag = solve_path_continuity(path, g, densities.Gaussian([-1.0, 1.0], 0.5 * np.eye(2)), [0, D], duration=D,
                                method="lagrangian")
    ex = np.exp(exact0.logpdf(g.points)).reshape(g.shape)
    out.append(at_most("deterministic flow along the path, Lagrangian (kernels with t at every stage): max rel. "
                       "error vs the moment ODE's Gaussian at the cell centres",
                       float(np.abs(lag.densities[-1] - ex).max() / ex.max()), 1e-7))
    x0 = np.random.default_rng(3).multivariate_normal([-1, 1], 0.5 * np.eye(2), size=500)
    pf_run = PA.path_flow(path, x0, [0, D], duration=D,
                          logrho0=densities.Gaussian([-1.0, 1.0], 0.5 * np.eye(2)).logpdf(x0))
    # the ODE tolerance: measured 7e-9
    out.append(at_most("particles along the path (path_flow): max |tracked log-density - exact logpdf|",
                       float(np.abs(pf_run.logdensity[-1] - exact0.logpdf(pf_run.positions[-1])).max()), 1e-7))

    out.append(at_most("Boltzmann claim: |grid residual - closed form (1/sqrt 2)|, one data point, 64^2",
                       abs(boltzmann_residual(H1, Grid([(-5, 5)] * 2, 64), 1.0)["relative_residual"]
                           - H1.gaussian_boltzmann_residual(1.0)), 2e-4))  # O(h^2): measured 2e-5
    g = Grid([(-6, 6)] * 2, 48)
    _, kl_ode = frozen_flow(H, g, 1.0, [2.0])
    fp = FokkerPlanck(H.at(1.0), g).solve(g.density_from_logpdf(lambda Y: H.logpdf(Y, 1.0)), [0.0, 2.0])
    out.append(at_least("past t = 1: frozen-potential ODE leaves rho_bar(1) (KL at s = 2)", float(kl_ode[-1]), 0.05,
                        strict=True))
    out.append(at_most("past t = 1: Langevin keeps rho_bar(1) (|KL| at s = 2)", abs(float(fp.kl()[-1])), 1e-12,
                       strict=True))  # round-off: measured 9e-15
    return out


@register
def check_schedules(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Every schedule of the VPFB log-homotopy at prior std w = 1.3 != likelihood std v = 0.6:
    optimal-transport flow matching against its closed forms (mu = t, sigma = 1 - t, the
    one-point velocity (xbar - x) / (1 - t), W2 to t = 0 = t sqrt(|xbar|^2 + d)); the kernel
    of the linear, flow-matching and geometric schedules against the completed square of
    alpha log q + beta log p computed by quadrature (mean and variance); d_t log rho_bar
    against central differences; the compiled path kernels against the mixture; the
    stationary tail frozen (d_t = 0) and equal to exp(-U_tail)."""
    out = []
    w, v, t = 1.3, 0.6, 0.45
    xbar = np.array([[1.5, -0.7]])
    H = VPFBHomotopy(xbar, w, v, schedule="ot-fm", t_max=0.95)
    X = np.random.default_rng(0).normal(size=(64, 2)) * 2
    err = max(abs(H.mu(t) - t), abs(math.sqrt(H.sigma2(t)) - (1 - t)), abs(H.dmu(t) - 1),
              abs(H.dsigma2(t) + 2 * (1 - t)))
    out.append(at_most("OT flow matching, w != v: max |mu - t|, |sigma - (1 - t)| and derivatives", err, 1e-12))
    out.append(at_most("OT flow matching: one-point velocity vs (xbar - x) / (1 - t), max abs",
                       float(np.abs(H.gaussian_velocity(X, t) - (xbar - X) / (1 - t)).max()), 1e-10))
    w2 = gaussian_w2_nd(H.mu(t) * xbar[0], H.sigma2(t) * np.eye(2), H.mu(0) * xbar[0], H.sigma2(0) * np.eye(2))
    out.append(near("OT flow matching: W2(rho(t), rho(0)) vs t sqrt(|xbar|^2 + d)", w2,
                    t * math.sqrt(xbar[0] @ xbar[0] + 2), 1e-10))
    x = np.linspace(-12, 12, 200_001)
    for sch in (VPFBSchedule.linear(), VPFBSchedule.ot_fm(), VPFBSchedule.geometric(30.0)):
        H1 = VPFBHomotopy([[1.7]], w, v, schedule=sch, t_max=0.95)
        a, b, _, _ = sch.weights(t, w * w, v * v)
        h = -0.5 * a * x ** 2 / w ** 2 - 0.5 * b * (1.7 - x) ** 2 / v ** 2
        p = np.exp(h - h.max())
        p /= np.trapezoid(p, x)
        mean = np.trapezoid(x * p, x)
        var = np.trapezoid((x - mean) ** 2 * p, x)
        out.append(at_most(f"{sch.name} schedule at t = {t}: |kernel mean, variance - quadrature of the homotopy|",
                           max(abs(mean - H1.mu(t) * 1.7), abs(var - H1.sigma2(t))), 1e-9))
        Hd = VPFBHomotopy(np.random.default_rng(1).normal(size=(4, 2)), w, v, schedule=sch, t_max=0.95)
        e = 1e-5
        fd = (Hd.logpdf(X, t + e) - Hd.logpdf(X, t - e)) / (2 * e)
        out.append(at_most(f"{sch.name} schedule: max |d_t log rho_bar - central difference|",
                           float(np.abs(Hd.dt_logpdf(X, t) - fd).max()), 1e-6))
        k, U = Hd.eval_path_kernels(X, t), Hd.at(t)
        kerr = max(float(np.abs(k["value"] - U.value(X)).max()), float(np.abs(k["grad"] - U.grad(X)).max()),
                   float(np.abs(k["lap"] - U.laplacian(X)).max()))
        out.append(at_most(f"{sch.name} schedule: compiled path kernels vs the mixture at t (value, grad, lap)",
                           kerr, 1e-10))
    Ht = VPFBHomotopy(xbar, w, v, schedule="ot-fm", t_max=0.7)
    frozen = max(float(np.abs(Ht.logpdf(X, 0.9) - Ht.logpdf(X, 0.7)).max()), float(np.abs(Ht.dt_logpdf(X, 0.9)).max()),
                 float(np.abs(Ht.tail_energy().value(X) + Ht.logpdf(X, 0.7)).max()))
    out.append(at_most("stationary tail from t_max = 0.7: law frozen, d_t = 0, U_tail = -log rho_bar(t_max)",
                       frozen, 1e-12))
    return out


# Written here from the grid, not taken from fokkerplanck.discrete.orbits: a check shares no
# code with what it checks.
