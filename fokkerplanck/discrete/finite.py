"""Finite state spaces: spin energies, detailed-balance generators and exact master equations.

A state is a configuration ``c`` in ``{0, ..., q-1}^n`` (``n`` sites, alphabet of ``q``
letters), numbered lexicographically: ``index(c) = sum_i c_i q^(n-1-i)``.  The target
law is ``pi(c) ~ exp(-E(c) / T)``.  For Ising models the letters 0, 1 are the spins
-1, +1.

Energies (:class:`PairEnergy`: a pair table on the edges of a lattice plus a field
table; :func:`ising` and :func:`potts` build them; :class:`TableEnergy` takes any
energy given on all states) are evaluated on every state at once.  :class:`FiniteSpace`
enumerates the states (refusing more than :data:`MAX_STATES`) and holds ``E``,
``pi`` and ``log Z``.

Generators ``L`` (``d p / dt = L p``, ``L[j, i]`` = rate of ``i -> j``) are sparse
matrices built by index arithmetic, never a Python loop over states:

* Glauber (heat bath): site ``i`` is resampled at rate 1 from its conditional law,
  ``rate(c -> c^{i,a}) = pi(c^{i,a}) / sum_b pi(c^{i,b})``;
* Metropolis: site ``i`` proposes each other letter at rate ``1/(q-1)``, accepted
  with ``min(1, pi(c') / pi(c))``.

Both satisfy detailed balance ``pi_i L[j, i] = pi_j L[i, j]``, so
``S = Pi^{-1/2} L Pi^{1/2}`` is symmetric negative semi-definite and ``exp(tL)`` is
applied exactly through the machinery of the grid solvers (eigh for small spaces, a
Chebyshev sweep otherwise, after a positive uniformisation phase while the initial law's
chi-square to ``pi`` is large; :class:`MasterEquation`).

Lyapunov identities (checked in the tests and ``fpk verify``): with ``f = p / pi``,

    d/dt KL(p_t || pi) = <L p, log f> = -D(p),
    D(p) = 1/2 sum_{i != j} pi_i L[j, i] (f_j - f_i)(log f_j - log f_i) >= 0,

and ``KL(p_t || pi) <= e^{-2 gap t} chi^2(p_0 || pi)``-type decay at the spectral gap of
``-S``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from fokkerplanck._core.validate import check_memory, check_times, finite_array, positive_float, positive_int
from fokkerplanck.operators.expm import gershgorin_bound
from fokkerplanck.operators.propagator import EIGH_MAX as EIGH_MAX_STATES, ReversiblePropagator

__all__ = ["MAX_STATES", "Lattice", "PairEnergy", "TableEnergy", "ising", "potts", "FiniteSpace",
           "glauber", "metropolis", "DYNAMICS", "MasterEquation", "kl", "dirichlet_form",
           "ising_chain_log_partition", "ising_chain_mean_energy", "TooManyStatesError", "n_states"]

MAX_STATES = 1 << 22      # exact enumeration limit (4.2e6 states; a 2^20-state generator has 2e7 entries)


class TooManyStatesError(ValueError):
    """The state space is too large to enumerate."""


# ------------------------------------------------------------------------------- lattices
@dataclass(frozen=True)
class Lattice:
    """Sites ``0..n-1`` and their nearest-neighbour edges: a chain (``shape = (L,)``) or
    an ``L0 x L1`` square lattice (``shape = (L0, L1)``, site ``i0 * L1 + i1``), periodic
    or open.  ``edges`` is (n_edges, 2), each undirected edge once."""

    shape: tuple
    periodic: bool = True
    edges: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        shape = tuple(int(positive_int(s, "lattice side")) for s in np.atleast_1d(self.shape))
        if len(shape) not in (1, 2):
            raise ValueError(f"lattice shape must be (L,) or (L0, L1), got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        idx = np.arange(int(np.prod(shape))).reshape(shape)
        e = []
        for ax in range(len(shape)):
            if shape[ax] < 2:
                continue
            nb = np.roll(idx, -1, axis=ax)
            a, b = idx, nb
            if not self.periodic or shape[ax] == 2:  # a 2-site periodic axis has one edge, not two
                keep = [slice(None)] * len(shape)
                keep[ax] = slice(0, shape[ax] - 1)
                a, b = idx[tuple(keep)], nb[tuple(keep)]
            e.append(np.stack([a.ravel(), b.ravel()], axis=1))
        edges = np.concatenate(e) if e else np.zeros((0, 2), dtype=np.int64)
        edges.setflags(write=False)
        object.__setattr__(self, "edges", edges)

    @property
    def n_sites(self) -> int:
        return int(np.prod(self.shape))

    def neighbours(self) -> np.ndarray:
        """(n, z) neighbour table padded with -1 (z = the largest degree)."""
        n = self.n_sites
        deg = np.bincount(self.edges.ravel(), minlength=n)
        z = int(deg.max()) if n else 0
        out = np.full((n, z), -1, dtype=np.int64)
        fill = np.zeros(n, dtype=np.int64)
        for a, b in self.edges:  # n_edges entries: small (sites, not states)
            out[a, fill[a]] = b
            fill[a] += 1
            out[b, fill[b]] = a
            fill[b] += 1
        return out


# ------------------------------------------------------------------------------- energies
class PairEnergy:
    """``E(c) = sum_{edges (i, j)} P[c_i, c_j] + sum_i F[c_i]`` on a :class:`Lattice`,
    for a symmetric pair table ``P`` (q, q) and a field table ``F`` (q,)."""

    def __init__(self, lattice: Lattice, pair, field_, name: str = "pair"):
        self.lattice = lattice
        P = finite_array(pair, "pair table")
        if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
            raise ValueError(f"pair table must be (q, q) with q >= 2, got shape {P.shape}")
        if not np.allclose(P, P.T, rtol=0, atol=1e-12 * max(1.0, np.abs(P).max())):
            raise ValueError("pair table must be symmetric (an undirected edge has no orientation)")
        F = finite_array(field_, "field table", shape=(P.shape[0],))
        self.q = P.shape[0]
        self.pair = P
        self.field = F
        self.name = name
        for a in (self.pair, self.field):
            a.setflags(write=False)

    @property
    def n_sites(self) -> int:
        return self.lattice.n_sites

    def energy(self, codes: np.ndarray) -> np.ndarray:
        """Energies of configurations ``codes`` (N, n) of letters."""
        c = np.asarray(codes)
        e = self.lattice.edges
        return self.pair[c[:, e[:, 0]], c[:, e[:, 1]]].sum(axis=1) + self.field[c].sum(axis=1)

    def spins(self, codes):
        """Ising spins ``2 c - 1`` (q = 2 only)."""
        if self.q != 2:
            raise ValueError("spins are defined for q = 2 (Ising) only")
        return 2 * np.asarray(codes, dtype=np.int64) - 1


def ising(shape, J: float = 1.0, h: float = 0.0, periodic: bool = True) -> PairEnergy:
    """``E(s) = -J sum_<ij> s_i s_j - h sum_i s_i``, spins ``s = +-1`` (letters 0, 1)."""
    J = float(finite_array(J, "J"))
    h = float(finite_array(h, "h"))
    s = np.array([-1.0, 1.0])
    return PairEnergy(Lattice(tuple(np.atleast_1d(shape)), periodic), -J * np.outer(s, s), -h * s, name="ising")


def potts(shape, q: int, J: float = 1.0, periodic: bool = True) -> PairEnergy:
    """``E(c) = -J sum_<ij> [c_i = c_j]`` with ``q`` colours."""
    q = positive_int(q, "q")
    if q < 2:
        raise ValueError(f"a Potts model needs q >= 2 colours, got {q}")
    J = float(finite_array(J, "J"))
    return PairEnergy(Lattice(tuple(np.atleast_1d(shape)), periodic), -J * np.eye(q), np.zeros(q), name="potts")


class TableEnergy:
    """Any energy on ``{0..q-1}^n`` given as a table over all ``q^n`` states (in the
    lexicographic order of the module docstring), or as a vectorised callable on codes
    (N, n) -> (N,) evaluated once on every state."""

    def __init__(self, q: int, n_sites: int, energy):
        self.q = positive_int(q, "q")
        if self.q < 2:
            raise ValueError(f"an alphabet needs at least 2 letters, got q = {self.q}")
        self.n_sites_ = positive_int(n_sites, "n_sites")
        size = n_states(self.q, self.n_sites_)
        if callable(energy):
            codes = _codes(self.q, self.n_sites_)
            vals = np.asarray(energy(codes), dtype=float)
            name = getattr(energy, "__name__", repr(energy))
            if vals.shape != (size,):
                raise ValueError(f"the energy callable {name} returned shape {vals.shape} for {size} states; "
                                 f"it must return one value per row of its (N, {self.n_sites_}) input")
            if not np.all(np.isfinite(vals)):
                raise ValueError(f"the energy callable {name} returned non-finite values "
                                 f"({int(np.sum(~np.isfinite(vals)))} of {size})")
        else:
            vals = finite_array(energy, "energy table", shape=(size,))
        self.table = vals
        self.table.setflags(write=False)

    @property
    def n_sites(self) -> int:
        return self.n_sites_

    def energy(self, codes) -> np.ndarray:
        return self.table[_index(np.asarray(codes), self.q)]


def n_states(q: int, n: int) -> int:
    size = q ** n
    if size > MAX_STATES:
        raise TooManyStatesError(f"{q}^{n} = {size:.4g} states is more than the {MAX_STATES} this toolkit "
                                 "enumerates exactly; use particles (particles.jumps) for larger systems")
    return size


def _codes(q: int, n: int) -> np.ndarray:
    """All states as codes (q^n, n), int8, lexicographic order."""
    size = n_states(q, n)
    check_memory(size * n, f"the codes of {size} states")
    idx = np.arange(size, dtype=np.int64)
    out = np.empty((size, n), dtype=np.int8)
    for i in range(n - 1, -1, -1):  # n sites: a loop over sites, not states
        out[:, i] = idx % q
        idx //= q
    return out


def _index(codes, q: int) -> np.ndarray:
    n = codes.shape[1]
    w = q ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return codes.astype(np.int64) @ w


# ------------------------------------------------------------------------------- the space
class FiniteSpace:
    """All states of an energy, with ``E``, ``log pi`` and ``log Z`` at temperature ``T``."""

    def __init__(self, energy, temperature: float = 1.0):
        self.energy = energy
        self.q = energy.q
        self.n_sites = energy.n_sites
        self.size = n_states(self.q, self.n_sites)
        self.temperature = positive_float(temperature, "temperature")
        self.codes = _codes(self.q, self.n_sites)
        self.E = energy.energy(self.codes) if not isinstance(energy, TableEnergy) else energy.table.copy()
        lw = -self.E / self.temperature
        self.log_z = float(logsumexp(lw))
        self.log_pi = lw - self.log_z
        self.pi = np.exp(self.log_pi)

    # observables ------------------------------------------------------------------------
    def magnetisation(self) -> np.ndarray:
        """Total magnetisation ``sum_i s_i`` of every state (Ising)."""
        return (2 * self.codes.astype(np.int64) - 1).sum(axis=1)

    def distribution(self, values, p=None):
        """The law of an observable (one value per state) under ``p`` (default pi):
        ``(support, probabilities)``."""
        v = np.asarray(values)
        w = self.pi if p is None else np.asarray(p, dtype=float)
        support, inv = np.unique(v, return_inverse=True)
        return support, np.bincount(inv, weights=w, minlength=support.size)

    def mean(self, values, p=None) -> float:
        w = self.pi if p is None else p
        return float(np.dot(w, values))

    def point_mass(self, codes) -> np.ndarray:
        """The law concentrated on one configuration."""
        c = np.asarray(codes).reshape(1, -1)
        if c.shape[1] != self.n_sites or c.min() < 0 or c.max() >= self.q:
            raise ValueError(f"a configuration is {self.n_sites} letters in 0..{self.q - 1}, got {c.ravel().tolist()}")
        p = np.zeros(self.size)
        p[int(_index(c, self.q)[0])] = 1.0
        return p

    def check_law(self, p, name: str = "p") -> np.ndarray:
        return probability_vector(finite_array(p, name, shape=(self.size,)), name)


def probability_vector(p: np.ndarray, name: str = "p") -> np.ndarray:
    """``p`` itself when it is a probability vector (non-negative, summing to 1 within 1e-9)."""
    if p.min() < 0:
        raise ValueError(f"{name} has negative entries (min {p.min():.3g})")
    s = p.sum()
    if abs(s - 1.0) > 1e-9:
        raise ValueError(f"{name} sums to {s:.12g}, not 1")
    return p


# ------------------------------------------------------------------------------- generators
def _flips(space: FiniteSpace):
    """For every (site, new letter != old): the source and target state indices (flat)."""
    q, n = space.q, space.n_sites
    idx = np.arange(space.size, dtype=np.int64)
    src, dst, site = [], [], []
    for i in range(n):  # sites x letters: small loops; the states are vectors
        w = q ** (n - 1 - i)
        ci = space.codes[:, i].astype(np.int64)
        for shift in range(1, q):
            a = (ci + shift) % q
            src.append(idx)
            dst.append(idx + (a - ci) * w)
            site.append(np.full(space.size, i))
    return np.concatenate(src), np.concatenate(dst), np.concatenate(site)


def _assemble(space, src, dst, rates) -> sp.csr_matrix:
    n = space.size
    check_memory(24.0 * src.size, f"a generator with {src.size} transitions")
    off = sp.csr_matrix((rates, (dst, src)), shape=(n, n))
    out = np.asarray(off.sum(axis=0)).ravel()
    return (off - sp.diags(out)).tocsr()


def glauber(space: FiniteSpace) -> sp.csr_matrix:
    """Heat-bath dynamics: each site is resampled from its conditional law at rate 1."""
    src, dst, site = _flips(space)
    lp = space.log_pi
    # conditional normaliser of site i at state c: logsumexp over its q letters
    q, n = space.q, space.n_sites
    norm = np.empty((n, space.size))
    idx = np.arange(space.size, dtype=np.int64)
    for i in range(n):
        w = q ** (n - 1 - i)
        ci = space.codes[:, i].astype(np.int64)
        base = idx - ci * w
        norm[i] = logsumexp(np.stack([lp[base + a * w] for a in range(q)]), axis=0)
    rates = np.exp(lp[dst] - norm[site, src])
    return _assemble(space, src, dst, rates)


def metropolis(space: FiniteSpace) -> sp.csr_matrix:
    """Metropolis dynamics: each site proposes each other letter at rate ``1/(q-1)``,
    accepted with ``min(1, pi(c') / pi(c))``."""
    src, dst, _ = _flips(space)
    lp = space.log_pi
    rates = np.exp(np.minimum(0.0, lp[dst] - lp[src])) / (space.q - 1)
    return _assemble(space, src, dst, rates)


DYNAMICS = {"glauber": glauber, "metropolis": metropolis}


# ------------------------------------------------------------------------------- diagnostics
def kl(p, log_pi) -> float:
    """``KL(p || pi)`` (0 log 0 = 0)."""
    p = np.asarray(p, dtype=float)
    pos = p > 0
    return float(np.sum(p[pos] * (np.log(p[pos]) - log_pi[pos])))


FILL_TOL = 1e-10   # inflow into empty states, relative to the largest exit rate, that is a real flow


def _fills_zeros(L, p) -> bool:
    """Whether the flow moves a real amount of mass into states where ``p`` is 0: there
    ``p log p`` has an infinite slope, so ``d/dt KL = -inf`` and ``D(p) = inf`` (a point mass
    at t = 0: inflow of the order of the rates).  Zeros of a law at t > 0 are underflow or
    truncation of the exact propagator (probabilities below ~1e-16 of the mass), whose
    inflow is below ``FILL_TOL`` times the largest exit rate: they are not that."""
    zero = p == 0
    if not zero.any():
        return False
    rate = float(np.abs(L.diagonal()).max())
    return bool(np.any((L @ p)[zero] > FILL_TOL * rate * max(float(p.sum()), 1e-300)))


def dirichlet_form(L: sp.csr_matrix, p, log_pi) -> float:
    """``D(p) = 1/2 sum_{i != j} pi_i L[j, i] (f_j - f_i)(log f_j - log f_i)``, ``f = p / pi``,
    through the flux ``pi_i L[j,i] (f_j - f_i) = L[i, j] p_j - L[j, i] p_i`` (detailed
    balance), so no ``pi`` division underflows.  ``inf`` when the flow fills states where
    ``p`` is 0 (there ``d/dt KL = -inf``); other zeros contribute nothing."""
    p = np.asarray(p, dtype=float)
    if _fills_zeros(L, p):
        return math.inf
    C = L.tocoo()
    off = C.row != C.col
    # pairs with an empty state carry no term, as in kl_rate (their inflow is below FILL_TOL
    # times the rates: checked above); both sides then sum the same pairs
    live = p > 0
    off &= live[C.row] & live[C.col]
    j, i, r = C.row[off], C.col[off], C.data[off]
    with np.errstate(divide="ignore", invalid="ignore"):   # only the live states' logs are used
        lf = np.log(p) - log_pi
    # rate i -> j times p_i, and the reverse rate by detailed balance: r_ji = r_ij pi_i / pi_j
    flux = r * np.exp(log_pi[i] - log_pi[j]) * p[j] - r * p[i]
    return float(0.5 * np.sum(flux * (lf[j] - lf[i])))


# ------------------------------------------------------------------------------- exact flow
class MasterEquation:
    """Exact ``p_t = exp(t L) p_0`` for a detailed-balance generator of ``space``.

    ``dynamics``: ``"glauber"`` or ``"metropolis"`` (or a generator matrix of the right
    size, checked for detailed balance)."""

    def __init__(self, space: FiniteSpace, dynamics="glauber"):
        self.space = space
        if isinstance(dynamics, str):
            if dynamics not in DYNAMICS:
                raise ValueError(f"dynamics must be one of {sorted(DYNAMICS)}, got {dynamics!r}")
            self.dynamics = dynamics
            self.L = DYNAMICS[dynamics](space)
        else:
            self.dynamics = "custom"
            self.L = sp.csr_matrix(dynamics)
            self.check_generator()
        self._S = None
        self._prop = None

    def check_generator(self, rtol: float = 1e-10) -> None:
        """Refuse a matrix that is not a generator with detailed balance towards ``pi``."""
        L, n = self.L, self.space.size
        if L.shape != (n, n):
            raise ValueError(f"the generator must be {n} x {n}, got {L.shape}")
        C = L.tocoo()
        off = C.row != C.col
        if np.any(C.data[off] < 0):
            raise ValueError("a generator has non-negative off-diagonal rates")
        if np.abs(np.asarray(L.sum(axis=0)).ravel()).max() > rtol * max(1.0, abs(L).max()):
            raise ValueError("a generator's columns sum to zero (d p/dt = L p keeps the mass)")
        lp = self.space.log_pi
        fwd = C.data[off] * np.exp(lp[C.col[off]])          # pi_i L[j, i]
        Lt = sp.csr_matrix(L.T)
        rev = np.asarray(Lt[C.row[off], C.col[off]]).ravel() * np.exp(lp[C.row[off]])  # pi_j L[i, j]
        bad = np.abs(fwd - rev) > rtol * np.maximum(np.abs(fwd), np.abs(rev)) + 1e-300
        if bad.any():
            raise ValueError(f"the generator does not satisfy detailed balance towards pi at {int(bad.sum())} "
                             "transitions (pi_i L[j,i] != pi_j L[i,j])")

    @property
    def symmetric(self) -> sp.csr_matrix:
        """``S = Pi^{-1/2} L Pi^{1/2}`` (symmetric by detailed balance)."""
        if self._S is None:
            C = self.L.tocoo()
            # S[j, i] = L[j, i] sqrt(pi_i / pi_j)
            vals = C.data * np.exp(0.5 * (self.space.log_pi[C.col] - self.space.log_pi[C.row]))
            S = sp.csr_matrix((vals, (C.row, C.col)), shape=self.L.shape)
            self._S = ((S + S.T) * 0.5).tocsr()  # exact symmetry (round-off)
        return self._S

    @property
    def rate(self) -> float:
        """The largest exit rate (uniformisation rate)."""
        return float(np.abs(self.L.diagonal()).max())

    def spectral_gap(self) -> float:
        """Smallest non-zero eigenvalue of ``-L``."""
        S = self.symmetric
        if S.shape[0] <= EIGH_MAX_STATES:
            lam = np.sort(-np.linalg.eigvalsh(S.toarray()))
            return float(lam[1])
        from scipy.sparse.linalg import eigsh

        # shift so the two smallest eigenvalues of -S become the largest of (c I + S)
        c = gershgorin_bound(S)
        vals = eigsh(S + c * sp.identity(S.shape[0]), k=2, which="LA", return_eigenvectors=False, tol=1e-12)
        return float(c - np.sort(vals)[0])

    @property
    def propagator(self) -> ReversiblePropagator:
        """The exact propagator of ``L`` (:mod:`fokkerplanck.operators.propagator`)."""
        if self._prop is None:
            lp = self.space.log_pi
            self._prop = ReversiblePropagator(self.L, lambda: self.symmetric, np.exp(0.5 * lp), lp,
                                              lam_max=gershgorin_bound(self.symmetric),
                                              spectral_gap=self.spectral_gap, eigh_max=EIGH_MAX_STATES)
        return self._prop

    def solve(self, p0, times, tol: float = 1e-14) -> np.ndarray:
        """``p_t`` at ``times`` (sorted, >= 0) as an array (len(times), size)."""
        p0 = self.space.check_law(p0, "p0")
        times = check_times(times)
        out, _ = self.propagator(p0, times, tol=tol)
        neg = out.min()
        if neg < -1e-12:
            warnings.warn(f"exact propagation produced a negative probability {neg:.3g} (round-off beyond "
                          "tolerance)", RuntimeWarning, stacklevel=2)
        return out

    def kl(self, P) -> np.ndarray:
        return np.array([kl(p, self.space.log_pi) for p in np.atleast_2d(P)])

    def dirichlet(self, P) -> np.ndarray:
        return np.array([dirichlet_form(self.L, p, self.space.log_pi) for p in np.atleast_2d(P)])

    def kl_rate(self, P) -> np.ndarray:
        """``d/dt KL = <L p, log(p / pi)>`` at each law of ``P`` (exact, no finite difference)."""
        out = []
        for p in np.atleast_2d(P):
            if _fills_zeros(self.L, p):
                out.append(-math.inf)
                continue
            Lp = self.L @ p
            pos = p > 0   # where p = 0 the flow puts nothing (checked above): no term
            out.append(float(Lp[pos] @ (np.log(p[pos]) - self.space.log_pi[pos])))
        return np.array(out)


# ------------------------------------------------------------------------------- closed forms
def _ising_chain_eigs(n, beta, J, h):
    a = math.exp(beta * J)
    c = math.cosh(beta * h)
    r = math.sqrt(a * a * math.sinh(beta * h) ** 2 + 1.0 / (a * a))
    return a * c + r, a * c - r


def ising_chain_log_partition(n: int, J: float, h: float, T: float = 1.0) -> float:
    """``log Z`` of the periodic Ising chain of ``n >= 3`` sites (transfer matrix):
    ``Z = l_+^n + l_-^n``, ``l_pm = e^{bJ} cosh(bh) pm sqrt(e^{2bJ} sinh^2(bh) + e^{-2bJ})``."""
    beta = 1.0 / T
    n = positive_int(n, "n")
    if n < 3:
        raise ValueError(f"the periodic chain formula needs n >= 3 sites, got {n}")
    lp, lm = _ising_chain_eigs(n, beta, J, h)
    return n * math.log(lp) + math.log1p((lm / lp) ** n)


def ising_chain_mean_energy(n: int, J: float, T: float = 1.0) -> float:
    """Mean energy of the periodic chain at ``h = 0``: ``-n J (t + t^{n-1}) / (1 + t^n)``,
    ``t = tanh(J / T)``."""
    t = math.tanh(J / T)
    return -n * J * (t + t ** (n - 1)) / (1 + t ** n)
