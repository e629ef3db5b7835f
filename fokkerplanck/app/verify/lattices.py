"""Checks of finite state spaces: master equations, jump particles, orbits of lattice symmetries."""
from __future__ import annotations

import math
import time

import numpy as np

from fokkerplanck import densities, discrete as Dz
from fokkerplanck.app.plots import _plt
from fokkerplanck.app.verify.framework import Check, Report, at_most, near, register
from fokkerplanck.discrete import mixed as Mx
from fokkerplanck.grid import Grid
from particles import jumps, mixed as mixed_particles


@register(one_thread=True)
def check_discrete(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Finite state spaces: the periodic Ising chain against its transfer matrix and
    Glauber's gap 1 - tanh(2J/T), the 2-site ring (one bond) against its closed form; the Lyapunov identity d/dt KL = -Dirichlet form along
    an exact Potts master equation; 4x4 Ising Glauber particles against the exact law
    (magnetisation histogram, in standard errors); Glauber and Metropolis particles of
    independent spins in a field against the closed-form relaxation of the mean spin."""
    out = []
    n, J, h, T = 12, 1.0, 0.25, 1.5
    space = Dz.FiniteSpace(Dz.ising(n, J, h), T)
    # round-off: measured 2e-16 (log Z, <E>), 2e-16 (gap), 5e-16 .. 1.3e-15 (d/dt KL + D)
    out.append(at_most("Ising chain n=12: |log Z - transfer matrix| / log Z",
                       abs(space.log_z - Dz.ising_chain_log_partition(n, J, h, T)) / abs(space.log_z), 1e-14))
    sp0 = Dz.FiniteSpace(Dz.ising(n, J, 0.0), T)
    out.append(at_most("Ising chain n=12, h=0: |<E> - closed form| / n",
                       abs(sp0.mean(sp0.E) - Dz.ising_chain_mean_energy(n, J, T)) / n, 1e-14))
    gap = Dz.MasterEquation(Dz.FiniteSpace(Dz.ising(8, J, 0.0), T), "glauber").spectral_gap()
    out.append(at_most("Glauber ring n=8: |gap - (1 - tanh(2J/T))|", abs(gap - (1 - math.tanh(2 * J / T))), 1e-13))
    # a periodic axis of 2 sites has one edge (its two neighbours are the same site): the 2-site ring
    # is one bond, Z = 2 e^{J/T} cosh(2h/T) + 2 e^{-J/T}, at T != 1 and h != 0 (measured 1.4e-16)
    J2, h2, T2 = -0.7, 0.3, 0.6
    lz2 = math.log(2 * math.exp(J2 / T2) * math.cosh(2 * h2 / T2) + 2 * math.exp(-J2 / T2))
    out.append(at_most("Ising ring n=2 (one bond), J < 0, T = 0.6: |log Z - closed form| / log Z",
                       abs(Dz.FiniteSpace(Dz.ising(2, J2, h2), T2).log_z - lz2) / abs(lz2), 1e-14))
    # 2^12 states: past the dense eigendecomposition, the gap by sparse eigsh (tol 1e-12; measured 6e-15)
    gap = Dz.MasterEquation(Dz.FiniteSpace(Dz.ising(12, J, 0.0), T), "glauber").spectral_gap()
    out.append(at_most("Glauber ring n=12 (4096 states, sparse eigsh): |gap - (1 - tanh(2J/T))|",
                       abs(gap - (1 - math.tanh(2 * J / T))), 1e-12))
    # Metropolis proposes each of the q - 1 other letters at rate 1/(q - 1): with J = 0 every site
    # relaxes on its own, its generator's non-zero eigenvalue is q/(q - 1), and so is the gap (measured
    # 1.4e-14 off)
    gap = Dz.MasterEquation(Dz.FiniteSpace(Dz.potts((2, 3), 3, 0.0), 0.9), "metropolis").spectral_gap()
    out.append(at_most("Potts 2x3 q=3, J = 0, metropolis: |gap - q/(q - 1)|", abs(gap - 1.5), 1e-12))
    # the Lyapunov identity along an exact flow
    pspace = Dz.FiniteSpace(Dz.potts((2, 3), 3, 1.0), 0.9)
    for dyn in ("glauber", "metropolis"):
        me = Dz.MasterEquation(pspace, dyn)
        P = me.solve(pspace.point_mass([0, 1, 2, 0, 1, 2]), [0.05, 0.3, 1.0, 3.0])
        D = me.dirichlet(P)   # finite: t > 0, every state has mass
        out.append(at_most(f"Potts 2x3 q=3 {dyn}: max |dKL/dt + D| / D", np.max(np.abs(me.kl_rate(P) + D) / D), 1e-13))
        out.append(at_most(f"Potts 2x3 q=3 {dyn}: KL decreasing along the exact flow (max increase)",
                           float(np.max(np.diff(me.kl(P)))), 0.0, strict=True))
    # 4x4 Ising: exact master equation against jump particles
    energy = Dz.ising((4, 4), 1.0, 0.0)
    Tc = 2 / math.log(1 + math.sqrt(2))
    space4 = Dz.FiniteSpace(energy, Tc)
    me4 = Dz.MasterEquation(space4, "glauber")
    start = np.ones(16, dtype=np.int8)
    times = np.array([0.0, 0.5, 2.0])
    P = me4.solve(space4.point_mass(start), times)
    N = 20_000 if quick else 100_000
    ens = jumps.simulate(energy, np.tile(start, (N, 1)), times, temperature=Tc, seed=11)
    M = space4.magnetisation()
    for s in (1, 2):
        sup, f, se = ens.histogram("magnetisation", s, support=np.arange(-16, 17, 2))
        _, exact = space4.distribution(M, P[s])
        z = float(np.max(np.abs(f - exact) / np.maximum(se, 1.0 / N)))
        out.append(at_most(f"4x4 Ising at T_c, Glauber, t={times[s]:g}: particles vs exact magnetisation law "
                           f"(max |z|, {N} particles, 9 bins)", z, 4.5))
    # independent spins (J = 0) in a field, at T != 1: each spin flips up at rate r+ and down at rate r-,
    # so the mean spin relaxes as m(t) = m* + (m(0) - m*) e^{-(r+ + r-) t}, m* = tanh(h/T), with
    # r+ + r- = 1 for Glauber and 1 + e^{-2|h|/T} for Metropolis: the particles' event clock against a
    # closed form (z-scores; measured max |z| 1.5; an event rate 1/n off moves them by ~40)
    h0, T0, n0, N0 = 0.4, 0.7, 4, 20_000
    m_star = math.tanh(h0 / T0)
    t0s = np.array([0.0, 0.5, 1.0, 2.0])
    for dyn, r in (("glauber", 1.0), ("metropolis", 1.0 + math.exp(-2 * h0 / T0))):
        ens0 = jumps.simulate(Dz.ising(n0, 0.0, h0), np.zeros((N0, n0), dtype=np.int8), t0s, dynamics=dyn,
                              temperature=T0, seed=23)
        m = ens0.magnetisation[1:] / n0
        exact = m_star + (-1.0 - m_star) * np.exp(-r * t0s[1:])
        z = np.abs(m.mean(1) - exact) / (m.std(1) / math.sqrt(N0))
        out.append(at_most(f"independent spins (J = 0, h = {h0:g}, T = {T0:g}), {dyn} particles: mean spin at "
                           f"t = 0.5, 1, 2 vs m* + (m0 - m*) e^(-rate t), max |z| ({N0} particles)", float(z.max()),
                           4.5))
    # a label coupled to coordinates: the joint Gaussian mixture on a grid x labels

    model = Mx.JointMixture([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]], [0.5, 0.8, 0.4], [0.5, 0.3, 0.2])
    mspace = Mx.MixedSpace(model, Grid([(-6, 6), (-5, 7)], 48))
    mme = mspace.master_equation()      # refuses a generator without detailed balance
    start = densities.Gaussian([0.0, 0.0], 0.5)
    Pm = mme.solve(mspace.product_law([1.0, 0.0, 0.0], start), np.linspace(0.0, 1.0, 5))  # the particles' saves
    Dm = mme.dirichlet(Pm[1:])
    out.append(at_most("joint mixture (3 labels x 48^2 cells): max |dKL/dt + D| / D",
                       np.max(np.abs(mme.kl_rate(Pm[1:]) + Dm) / Dm), 1e-13))
    Nm = 20_000
    _, labs, _ = mixed_particles.simulate(model, np.zeros(Nm, dtype=int), start.sample(Nm, seed=1), 2e-3, 500, save_every=125,
                             seed=2)
    lab_exact = mspace.label_law(Pm)
    zm = max(float(np.max(np.abs(np.bincount(labs[s], minlength=3) / Nm - lab_exact[s])
                          / np.sqrt(np.maximum(lab_exact[s] * (1 - lab_exact[s]), 1e-12) / Nm))) for s in (1, 2, 3, 4))
    out.append(at_most("joint mixture: particles (jumps + Langevin, dt 2e-3) vs exact label law, max |z|", zm, 5.0,
                       "20000 particles; includes the O(dt) bias of the time stepping"))
    if report is not None:
        fig, (a1, a2) = _plt().subplots(1, 2, figsize=(11, 4), layout="constrained")
        for s, col in ((1, "C0"), (2, "C1")):
            sup, f, se = ens.histogram("magnetisation", s, support=np.arange(-16, 17, 2))
            _, exact = space4.distribution(M, P[s])
            a1.errorbar(sup, f, yerr=se, fmt="o", color=col, ms=3, label=f"particles t={times[s]:g}")
            a1.plot(sup, exact, "-", color=col, lw=0.8, label=f"exact t={times[s]:g}")
        a1.set_xlabel("magnetisation")
        a1.set_ylabel("probability")
        a1.set_title("4x4 Ising at T_c, Glauber from all up")
        a1.legend(fontsize="x-small")
        Ts = np.linspace(1.5, 3.5, 9 if quick else 17)
        side = 3 if quick else 4
        gaps = [Dz.MasterEquation(Dz.FiniteSpace(Dz.ising((side, side), 1.0, 0.0), t), "glauber").spectral_gap()
                for t in Ts]
        a2.semilogy(Ts, 1 / np.array(gaps), "o-", label=f"{side}x{side} periodic, Glauber")
        a2.axvline(Tc, color="k", ls=":", label="T_c (infinite lattice)")
        a2.set_xlabel("T")
        a2.set_ylabel("relaxation time 1 / gap")
        a2.legend(fontsize="x-small")
        report.figure("ising_exact_vs_particles", fig)
    return out


def _torus_symmetries(L: int) -> list[np.ndarray]:
    """The 8 L^2 site permutations of the periodic L x L square (translations, rotations,
    reflections), each found by moving the labels 0..n-1 with np.roll / flips / transposes."""
    lab = np.arange(L * L).reshape(L, L)
    points = [lab, lab[::-1], lab[:, ::-1], lab[::-1, ::-1]]
    points += [p.T for p in points]
    return [np.argsort(np.roll(p, (a, b), axis=(0, 1)).ravel()) for p in points for a in range(L) for b in range(L)]


def _burnside(perms, q: int) -> int:
    """(1/|G|) sum_g q^cycles(g), the cycles counted by walking each permutation."""
    total = 0
    for g in perms:
        seen, cycles = np.zeros(g.size, dtype=bool), 0
        for i in range(g.size):
            if not seen[i]:
                cycles += 1
                while not seen[i]:
                    seen[i] = True
                    i = int(g[i])
        total += q ** cycles
    return total // len(perms)


def _transfer_log_z(pair, field, L0: int, L1: int, T: float) -> float:
    """log Z of a pair energy on the periodic L0 x L1 lattice (L1 >= 3): row-to-row transfer
    matrix, Z = tr M^L0 = sum of its eigenvalues to the power L0."""
    q = pair.shape[0]
    rows = np.array(np.unravel_index(np.arange(q ** L1), (q,) * L1)).T
    e_row = pair[rows, np.roll(rows, -1, axis=1)].sum(1) + field[rows].sum(1)
    e_between = pair[rows[:, None, :], rows[None, :, :]].sum(2)
    lam = np.linalg.eigvalsh(np.exp(-(0.5 * e_row[:, None] + 0.5 * e_row[None, :] + e_between) / T))
    return L0 * math.log(lam[-1]) + math.log(np.sum((lam / lam[-1]) ** L0))


@register
def check_orbits(quick: bool = True, report: Report | None = None) -> list[Check]:
    """Exact master equations on the orbits of the lattice symmetries (2^25 states and more):
    4x4 Ising at T_c reduced against full (Glauber and Metropolis from all up, L1 over the
    65536 states, KL and the magnetisation law), the orbit counts of 4x4 and 5x5 against
    Burnside's lemma over the 8 L^2 symmetries written here; 5x5 Ising at T_c (2^25 states,
    172112 orbits): log Z against the row transfer matrix, KL(0) = E_up / T + log Z, KL
    decreasing, d/dt KL = -D (the identity and central differences), Glauber jump particles
    against the exact magnetisation law (z-scores) and mean energy.  Not quick: 4x4 Potts
    q = 3 at its T_c (3^16 states) likewise (log Z, KL(0), decrease, d/dt KL = -D)."""
    out = []
    Tc = 2 / math.log(1 + math.sqrt(2))
    # 4x4: reduced against full, to round-off
    e4 = Dz.ising((4, 4), 1.0, 0.0)
    full, sym = Dz.FiniteSpace(e4, Tc), Dz.SymmetricSpace(e4, Tc)
    out.append(near("4x4 Ising: orbits = Burnside's count over the 128 symmetries (computed here)",
                    sym.size, _burnside(_torus_symmetries(4), 2), 0))
    out.append(at_most("4x4 Ising at T_c: |log Z (orbits) - log Z (all 65536 states)| / log Z",
                       abs(sym.log_z - full.log_z) / full.log_z, 1e-13))
    times = np.array([0.0, 0.3, 1.0, 3.0, 10.0])
    for dyn in ("glauber", "metropolis"):
        me_full, me = Dz.MasterEquation(full, dyn), Dz.SymmetricMasterEquation(sym, dyn)
        Pf = me_full.solve(full.point_mass([1] * 16), times)
        Ps = me.solve(sym.point_mass([1] * 16), times)
        out.append(at_most(f"4x4 Ising at T_c, {dyn} from all up: max_t L1(lifted orbit law, full law)",
                           float(np.abs(sym.lift(Ps) - Pf).sum(1).max()), 1e-12))
        out.append(at_most(f"4x4 Ising at T_c, {dyn}: max_t |KL (orbits) - KL (full)|",
                           float(np.abs(me.kl(Ps) - me_full.kl(Pf)).max()), 1e-12))
        _, mlaw = me.magnetisation_law(Ps)
        mfull = np.stack([full.distribution(full.magnetisation(), p)[1] for p in Pf])
        out.append(at_most(f"4x4 Ising at T_c, {dyn}: max_t max |magnetisation law (orbits) - (full)|",
                           float(np.abs(mlaw - mfull).max()), 1e-12))
    # 5x5: past the full enumeration
    e5 = Dz.ising((5, 5), 1.0, 0.0)
    t0 = time.perf_counter()
    sym5 = Dz.SymmetricSpace(e5, Tc)
    out.append(near("5x5 Ising: orbits = Burnside's count over the 200 symmetries (computed here)",
                    sym5.size, _burnside(_torus_symmetries(5), 2), 0))
    out.append(at_most("5x5 Ising at T_c: |log Z (172112 orbits) - transfer matrix| / log Z",
                       abs(sym5.log_z - _transfer_log_z(e5.pair, e5.field, 5, 5, Tc)) / sym5.log_z, 1e-13))
    me5 = Dz.SymmetricMasterEquation(sym5, "glauber")
    times = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0]) if quick else np.linspace(0.0, 16.0, 33)
    P5 = me5.solve(sym5.point_mass([1] * 25), times)
    kl5 = me5.kl(P5)
    elapsed = time.perf_counter() - t0
    up = -2 * 25.0   # all up: 50 bonds of energy -J
    out.append(at_most("5x5 Ising at T_c, Glauber: |KL(0) - (E_up / T + log Z (transfer matrix))| / KL(0)",
                       abs(kl5[0] - (up / Tc + _transfer_log_z(e5.pair, e5.field, 5, 5, Tc))) / kl5[0], 1e-12))
    out.append(at_most("5x5 Ising at T_c, Glauber: KL decreasing along the exact orbit flow (max increase)",
                       float(np.max(np.diff(kl5))), 0.0, strict=True, detail=f"{elapsed:.1f} s for the space and flow"))
    D5 = me5.dirichlet(P5[1:])
    out.append(at_most("5x5 Ising at T_c, Glauber: max |dKL/dt + D| / D (exact rate)",
                       float(np.max(np.abs(me5.kl_rate(P5[1:]) + D5) / D5)), 1e-10))
    dlt, tt = 1e-3, times[1:4]
    kk = me5.kl(me5.solve(sym5.point_mass([1] * 25), np.sort(np.concatenate([tt - dlt, tt + dlt]))))
    fd = (kk[1::2] - kk[0::2]) / (2 * dlt)
    out.append(at_most("5x5 Ising at T_c, Glauber: max |central difference of KL + D| / D (dt = 1e-3)",
                       float(np.max(np.abs(fd + D5[:3]) / D5[:3])), 1e-5))
    # the dynamics against Glauber jump particles (no enumeration at all)
    N = 20_000 if quick else 100_000
    pt = np.array([0.0, 0.5, 2.0])
    Pp = me5.solve(sym5.point_mass([1] * 25), pt)
    ens = jumps.simulate(e5, np.ones((N, 25), dtype=np.int8), pt, temperature=Tc, seed=17)
    sup, laws = me5.magnetisation_law(Pp)
    for s in (1, 2):
        _, f, se = ens.histogram("magnetisation", s, support=sup.astype(int))
        z = float(np.max(np.abs(f - laws[s]) / np.maximum(se, 1.0 / N)))
        out.append(at_most(f"5x5 Ising at T_c, t={pt[s]:g}: particles vs exact orbit magnetisation law "
                           f"(max |z|, {N} particles, 26 bins)", z, 4.5))
        e = ens.energy[s]
        out.append(at_most(f"5x5 Ising at T_c, t={pt[s]:g}: |mean energy (particles) - exact| in standard errors",
                           abs(e.mean() - sym5.mean(sym5.E, Pp[s])) / (e.std() / math.sqrt(N)), 4.5))
    if not quick:
        ep = Dz.potts((4, 4), 3, 1.0)
        Tp = 1 / math.log(1 + math.sqrt(3))
        symp = Dz.SymmetricSpace(ep, Tp)
        out.append(near("4x4 Potts q=3: orbits = Burnside's count (computed here)",
                        symp.size, _burnside(_torus_symmetries(4), 3), 0))
        lz = _transfer_log_z(ep.pair, ep.field, 4, 4, Tp)
        out.append(at_most("4x4 Potts q=3 at T_c: |log Z (orbits) - transfer matrix| / log Z",
                           abs(symp.log_z - lz) / lz, 1e-13))
        mep = Dz.SymmetricMasterEquation(symp, "glauber")
        Pq = mep.solve(symp.point_mass([0] * 16), np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0]))
        klp = mep.kl(Pq)
        out.append(at_most("4x4 Potts q=3 at T_c: |KL(0) - (E_0 / T + log Z (transfer matrix))| / KL(0)",
                           abs(klp[0] - (-32.0 / Tp + lz)) / klp[0], 1e-12))
        out.append(at_most("4x4 Potts q=3 at T_c, Glauber: KL decreasing (max increase)",
                           float(np.max(np.diff(klp))), 0.0, strict=True))
        Dp = mep.dirichlet(Pq[1:])
        out.append(at_most("4x4 Potts q=3 at T_c, Glauber: max |dKL/dt + D| / D",
                           float(np.max(np.abs(mep.kl_rate(Pq[1:]) + Dp) / Dp)), 1e-10))
    if report is not None:
        fig, (a1, a2) = _plt().subplots(1, 2, figsize=(11, 4), layout="constrained")
        a1.semilogy(times, kl5, "o-")
        a1.set_xlabel("t")
        a1.set_ylabel("KL(p_t || pi)")
        a1.set_title("5x5 Ising at T_c, Glauber from all up (exact, 172112 orbits)")
        for s, col in ((1, "C0"), (2, "C1")):
            _, f, se = ens.histogram("magnetisation", s, support=sup.astype(int))
            a2.errorbar(sup, f, yerr=se, fmt="o", color=col, ms=3, label=f"particles t={pt[s]:g}")
            a2.plot(sup, laws[s], "-", color=col, lw=0.8, label=f"exact t={pt[s]:g}")
        a2.set_xlabel("magnetisation")
        a2.legend(fontsize="x-small")
        report.figure("orbits_5x5_ising", fig)
    return out
