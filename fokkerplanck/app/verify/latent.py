"""Checks of latent-variable energy-based models: the exact grid quantities against the
linear-Gaussian closed forms, the best Gaussian ELBO against a brute-force search, the
conditional pool's flow against its OU closed form, and the particle pools' parameter
gradient against the exact one."""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

from fokkerplanck import densities
from fokkerplanck.app.verify.framework import Check, Report, at_most, near, register
from fokkerplanck.grid import Grid
from fokkerplanck.theory import latent as L

POWERS = [[2, 0], [1, 1], [0, 2], [0, 4]]
SCALE = [0.5, -1.0, 0.5, 0.25]   # E = theta_1 x^2 / 2 - theta_2 x z + theta_3 z^2 / 2 + theta_4 z^4 / 4


def brute_force_gaussian_gap(model, x) -> float:
    """``min_{m, s} KL(N(m, s^2) || p(z | x))`` by Nelder-Mead from six starts, the KL by a
    quadrature of its own (16001 nodes on [-8, 8]), independent of the model's grid."""
    z = np.linspace(-8, 8, 16001)
    h = z[1] - z[0]
    log_post = -model.conditional(x).value(z[:, None])
    log_post -= np.log(np.sum(np.exp(log_post - log_post.max())) * h) + log_post.max()

    def kl(v):
        s = math.exp(v[1])
        q = np.exp(-0.5 * ((z - v[0]) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
        return float(np.sum(q * (np.log(q + 1e-300) - log_post)) * h)

    return min(minimize(kl, [m0, math.log(s0)], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13}).fun
               for m0 in (-1.0, 0.0, 1.0) for s0 in (0.3, 1.0))


@register(one_thread=True)
def check_latent(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Latent-variable EBMs.  The linear-Gaussian model (joint N(0, M^-1)): log Z, log p(x),
    the parameter gradient, the ELBO gap of a Gaussian q and the best Gaussian ELBO (gap 0)
    against closed forms; the conditional pool's flow (an OU towards N(b x / c, 1 / c)): KL and
    W2 against the closed form, and the Bakry-Emery constant c.  The quartic model (a bimodal
    posterior): the best Gaussian ELBO's gap against a brute-force search, the gradient against
    finite differences, and MALA pools' gradient within 4 standard errors of the exact one."""
    a, b, c = 1.3, 0.8, 1.1
    model = L.LatentEBM.polynomial(POWERS[:3], [a, b, c], Grid([(-9, 9), (-9, 9)], (48, 240)), scale=SCALE[:3])
    M = np.array([[a, -b], [-b, c]])
    S = np.linalg.inv(M)
    X = np.array([[-1.2], [0.4], [2.5]])
    out = []
    # measured errors (48 x 240 cells): log Z and log p 2.3e-12, gradient 1.2e-10, Gaussian ELBO 1e-15
    out.append(near("linear Gaussian: log Z (grid) vs log 2 pi - log det M / 2", model.log_partition(),
                    math.log(2 * math.pi) - 0.5 * math.log(np.linalg.det(M)), 1e-10))
    closed = -0.5 * X[:, 0] ** 2 / S[0, 0] - 0.5 * math.log(2 * math.pi * S[0, 0])
    out.append(at_most("linear Gaussian: max |log p(x_i) - log N(x_i; 0, (M^-1)_xx)|",
                       np.abs(model.log_marginal(X) - closed).max(), 1e-10))
    mu = b * X[:, 0] / c
    post = np.stack([X[:, 0] ** 2 / 2, -X[:, 0] * mu, (mu**2 + 1 / c) / 2], axis=1)
    joint = np.array([S[0, 0] / 2, -S[0, 1], S[1, 1] / 2])
    out.append(at_most("linear Gaussian: max |d log-likelihood / d theta - (E_joint phi - mean E_post phi)|",
                       np.abs(model.grad_log_likelihood(X) - (joint - post.mean(axis=0))).max(), 1e-8))
    q = densities.Gaussian([1.5], 0.16).on_grid(model.z_grid)
    r = model.elbo(X[1], q)
    kl = 0.5 * (0.16 * c + (1.5 - mu[1]) ** 2 * c - 1 - math.log(0.16 * c))
    out.append(near("linear Gaussian: ELBO gap of q = N(1.5, 0.4^2) vs KL(q || N(b x / c, 1 / c))", r.gap, kl, 1e-9))
    out.append(near("linear Gaussian: ELBO + gap - log p(x)", r.elbo + r.gap - r.log_marginal, 0.0, 1e-12))
    g = model.gaussian_elbo(X[1])
    out.append(near("linear Gaussian: gap of the best Gaussian ELBO (the posterior is Gaussian)", g.gap, 0.0, 1e-9))
    # the conditional pool's flow from N(-2, 0.5^2): measured 4.5e-3 (KL) and 2.3e-3 (W2) relative, O(h^2)
    times = np.linspace(0, 2, 5)
    d = L.decay(model.conditional_flows(X[1:2], densities.Gaussian([-2.0], 0.25), times)[0])
    mt = mu[1] + (-2.0 - mu[1]) * np.exp(-c * times)
    vt = 1 / c + (0.25 - 1 / c) * np.exp(-2 * c * times)
    kl_t = 0.5 * (vt * c + (mt - mu[1]) ** 2 * c - 1 - np.log(vt * c))
    w2_t = np.sqrt((mt - mu[1]) ** 2 + (np.sqrt(vt) - math.sqrt(1 / c)) ** 2)
    out.append(at_most("conditional pool flow (OU, 240 cells): max_t |KL - closed form| / KL",
                       np.max(np.abs(d.kl - kl_t) / kl_t), 1e-2))
    out.append(at_most("conditional pool flow (OU, 240 cells): max_t |W2 - closed form| / W2",
                       np.max(np.abs(d.w2[1:] - w2_t[1:]) / w2_t[1:]), 5e-3))
    out.append(near("conditional pool: Bakry-Emery constant (certified) vs c", d.constant.value if d.constant.certified
                    else math.nan, c, 1e-12))
    # the quartic model: a bimodal posterior at x = 0.2
    quartic = L.LatentEBM.polynomial(POWERS, [1.0, 1.5, -1.0, 1.0], Grid([(-9, 9), (-4, 4)], (144, 64)), scale=SCALE)
    # the compiled kernels the particle pools run (MALA is exact in law whatever its gradient, so
    # the pools' check below cannot see a wrong gradient kernel): against the joint energy at (x, z)
    Xk = np.array([[-1.0], [0.2], [1.5]])
    Zk = np.random.default_rng(0).normal(size=(64, 3))
    st = quartic.stacked(Xk)
    k = st.eval_kernels(Zk)
    err = 0.0
    for i, x in enumerate(Xk):
        Y = np.hstack([np.full((64, 1), x[0]), Zk[:, [i]]])
        err = max(err, np.abs(k["grad"][:, i] - quartic.energy.grad(Y)[:, 1]).max(),
                  np.abs(k["hess"][:, i, i] - quartic.energy.hessian(Y)[:, 1, 1]).max())
    err = max(err, np.abs(k["value"] - st.value(Zk)).max() / np.abs(st.value(Zk)).max(),
              np.abs(k["lap"] - st.laplacian(Zk)).max())
    Yk = np.hstack([np.repeat(Xk, 22, axis=0)[:64], Zk[:, :1]])       # the joint kernels, off-diagonal included
    kj = quartic.energy.eval_kernels(Yk)
    err = max(err, np.abs(kj["hess"] - quartic.energy.hessian(Yk)).max(), np.abs(kj["grad"] - quartic.energy.grad(Yk)).max())
    out.append(at_most("quartic model: compiled kernels of the joint energy and of the conditional pools (value, "
                       "grad, lap, hess) vs the joint energy's vectorised derivatives at (x, z)", err, 1e-12))
    gq = quartic.gaussian_elbo(np.array([0.2]))
    out.append(near("quartic model, bimodal posterior at x = 0.2: best Gaussian ELBO gap vs brute-force search",
                    gq.gap, brute_force_gaussian_gap(quartic, np.array([0.2])), 1e-8, f"gap {gq.gap:.6g} > 0"))
    Xq = np.array([[-1.0], [0.2], [1.5]])
    grad = quartic.grad_log_likelihood(Xq)
    h = 1e-5
    fd = np.array([(quartic.with_theta(quartic.theta + h * e).log_likelihood(Xq)
                    - quartic.with_theta(quartic.theta - h * e).log_likelihood(Xq)) / (2 * h) for e in np.eye(4)])
    out.append(at_most("quartic model: max |gradient - finite differences of the log-likelihood|",
                       np.abs(grad - fd).max(), 1e-7, "measured 6.6e-10"))
    # MALA pools started far from their laws relax (400 steps of 0.05); the standard error is
    # held against the one the exact feature variances give (a pool that did not move, or an
    # inflated error bar, fails): measured 0.2-4 % apart
    rng = np.random.default_rng(1)
    Y0 = np.array([3.0, -2.0]) + 0.3 * rng.normal(size=(4000, 2))
    Z0 = 2.0 + 0.3 * rng.normal(size=(len(Xq), 3000, 1))
    Y = quartic.joint_pool(Y0, 0.05, 400, seed=3, method="mala", summaries=False).positions[-1]
    pools = quartic.per_point(quartic.conditional_pools(Xq, Z0, 0.05, 400, seed=4, method="mala",
                                                        summaries=False).positions[-1])
    est, se = quartic.gradient_estimate(Xq, Y, pools)
    out.append(at_most("quartic model: MALA pools' gradient, max |estimate - exact| / stderr", np.max(np.abs(est - grad)
                                                                                                     / se), 4.0))
    out.append(at_most("quartic model: max |stderr / the exact variances' stderr - 1|",
                       np.max(np.abs(se / quartic.gradient_stderr(Xq, len(Y), 3000) - 1)), 0.15))
    return out
