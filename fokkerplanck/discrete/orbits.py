"""Exact master equations on the orbits of a lattice's symmetry group: past 2^22 states.

:class:`~fokkerplanck.discrete.finite.FiniteSpace` enumerates every state and stops at
:data:`~fokkerplanck.discrete.finite.MAX_STATES`; a 5x5 Ising model (2^25 states) or a
4x4 three-colour Potts model (3^16) is refused.  Their dynamics started from a symmetric
law never leave the symmetric sector, which is a few hundred times smaller.

Symmetry.  A group ``G`` of site permutations ``g`` that maps the lattice's edges onto
edges (translations of a periodic lattice, the point group of the square or rectangle,
the dihedral group of a ring: :func:`lattice_symmetries`) acts on configurations by
moving letters, ``(g c)_{g(i)} = c_i``.  A :class:`~.finite.PairEnergy` (one pair table
on every edge, one field table on every site) is invariant, ``E(g c) = E(c)``, and so
are the Glauber and Metropolis rates: ``L[g j, g i] = L[j, i]``.  Letter permutations
(spin flip, colour exchange) are symmetries of the energy at zero field but not of an
all-up start: they are not site permutations, and ``G`` never contains them.

Lumpability.  The orbits ``A = G i`` partition the ``q^n`` states.  For orbits ``A, B``
the rate ``sum_{j in B} L[j, i]`` is the same for every ``i`` in ``A`` (apply ``g`` with
``g i = i'``: it maps ``B`` onto itself), so the orbit process of the Markov chain is a
Markov chain (strong lumpability) with generator

    Lt[B, A] = sum_{j in B} L[j, i]      (any i in A),

(moves inside ``A`` are invisible: ``Lt[A, A] = -sum_{B != A} Lt[B, A]``), and when ``p_0`` is constant on orbits (a *symmetric* law) so is ``p_t``, with
``p_t(i) = pt_t(A) / |A|`` and ``pt_t = exp(t Lt) pt_0`` exactly.

Weights.  The lumped law of ``pi`` is ``pit(A) = |A| pi(i) = |A| e^{-E_A/T} / Z`` with
the full partition function ``log Z = logsumexp_A (log|A| - E_A / T)``.  The orbit size
is ``|A| = |G| / |Stab(i)|`` (orbit-stabiliser), and the number of orbits is
``(1/|G|) sum_g q^{cycles(g)}`` (Burnside's lemma, :func:`burnside_count`), known before
anything is enumerated.  Detailed balance survives lumping: as ``pi`` is constant on
``A`` and the inner sum does not depend on ``i``,

    pit_A Lt[B, A] = |A| pi_i sum_{j in B} L[j, i] = sum_{i in A, j in B} pi_i L[j, i],

which is symmetric in ``(A, B)`` by detailed balance of ``L``: ``pit_A Lt[B, A] =
pit_B Lt[A, B]``.  The lumped chain is reversible towards ``pit``
and its exact propagator is the shared :class:`~fokkerplanck.operators.propagator.ReversiblePropagator`
(through :class:`~.finite.MasterEquation`).

Diagnostics are preserved.  For a symmetric ``p``, ``f = p / pi`` is constant on orbits
and equals ``ft = pt / pit`` there, so ::

    KL(p || pi) = sum_A sum_{i in A} p_i log f_i = sum_A pt_A log ft_A = KL(pt || pit),
    D(p) = 1/2 sum_{A, B} (ft_B - ft_A)(log ft_B - log ft_A) sum_{i in A, j in B} pi_i L[j, i]
         = 1/2 sum_{A, B} pit_A Lt[B, A] (ft_B - ft_A)(log ft_B - log ft_A) = Dt(pt),

the Lyapunov identity ``d/dt KL = -D`` holds on the orbits, and the laws of the
magnetisation and of the energy (constant on orbits) are read off ``pt`` directly.

Enumeration (numba).  A configuration's code is its lexicographic index (as in
:mod:`.finite`); the representative of an orbit is its smallest code.  The image of a
code under ``g`` is a sum of table look-ups, one per chunk of ``m`` digits (``q^m <= 256``
entries a table).  One pass over all ``q^n`` codes keeps those that no ``g`` makes
smaller, leaving as soon as one does (two or three group elements for almost every
code); neighbours of a representative are found by a table of the orbit of every code
(4 bytes a code) or, where that does not fit, by canonicalising them and a binary search
in the sorted representatives.  5x5 Ising: 172112 orbits of the 200 symmetries, the
space in ~3 s, the lumped Glauber generator (4.4e6 entries) in ~2 s, 0.7 GiB in all;
4x4 Potts q = 3: 359955 orbits of 128, 1.1e7 entries, 1.2 GiB (2 cores).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from numba import prange
from scipy.special import logsumexp

from fokkerplanck._core.jit import jit, pjit
from fokkerplanck._core.validate import available_memory, check_memory, finite_array, positive_float
from fokkerplanck.discrete.finite import (
    MAX_STATES,
    MasterEquation,
    PairEnergy,
    TooManyStatesError,
    _fills_zeros,
    probability_vector,
)

__all__ = [
    "LUMPED_DYNAMICS",
    "MAX_ORBITS",
    "SYMMETRIES",
    "SymmetricMasterEquation",
    "SymmetricSpace",
    "burnside_count",
    "lattice_symmetries",
    "lumped_glauber",
    "lumped_metropolis",
    "orbit_memory",
]

MAX_ORBITS = 1 << 22     # orbits (states of the lumped chain): the same limit as FiniteSpace's states
MAX_GROUP = 4096         # group elements (look-up tables of |G| x n/m x 256 entries)
TABLE_FRACTION = 0.25    # the orbit table of every code (4 q^n bytes) is built when it fits in this share
SYMMETRIES = ("lattice", "translations", "point", "none")


# ------------------------------------------------------------------------------- the group
def _closure(gens, n: int) -> np.ndarray:
    """The group generated by site permutations ``gens`` (identity first, then sorted)."""
    ident = tuple(range(n))
    seen = {ident}
    frontier = [ident]
    gens = [tuple(int(x) for x in g) for g in gens]
    while frontier:
        nxt = []
        for h in frontier:
            for g in gens:
                gh = tuple(g[h[i]] for i in range(n))   # first h, then g
                if gh not in seen:
                    if len(seen) >= MAX_GROUP:
                        raise ValueError(f"the symmetries generate more than {MAX_GROUP} site permutations")
                    seen.add(gh)
                    nxt.append(gh)
        frontier = nxt
    rest = sorted(seen - {ident})
    return np.array([ident] + rest, dtype=np.int64).reshape(-1, n)


def _edge_set(edges) -> set:
    return {(int(min(a, b)), int(max(a, b))) for a, b in edges}


def lattice_symmetries(lattice, kind: str = "lattice") -> np.ndarray:
    """The site permutations of ``lattice`` (a :class:`~.finite.Lattice`) as an array
    (|G|, n), identity first, row ``g`` mapping site ``i`` to ``g[i]``.

    ``kind``: ``"lattice"`` (translations of a periodic lattice and the point group:
    the dihedral group of order ``2L`` on a ring, ``8 L^2`` on a periodic ``L x L``
    square, ``4 L0 L1`` on a periodic rectangle; reflections only on open lattices),
    ``"translations"`` (periodic lattices), ``"point"`` (reflections, and the rotations
    of a square) or ``"none"`` (the identity).  Every element is checked to map edges
    onto edges."""
    if kind not in SYMMETRIES:
        raise ValueError(f"symmetries must be one of {list(SYMMETRIES)} or an array of site permutations, got {kind!r}")
    shape = lattice.shape
    n = lattice.n_sites
    coords = np.indices(shape).reshape(len(shape), -1)      # (d, n), site i = ravel_multi_index
    gens = []
    if kind in ("lattice", "translations"):
        if not lattice.periodic:
            if kind == "translations":
                raise ValueError(f"an open lattice {shape} has no translations; use symmetries='point'")
        else:
            for ax in range(len(shape)):
                c = coords.copy()
                c[ax] = (c[ax] + 1) % shape[ax]
                gens.append(np.ravel_multi_index(tuple(c), shape))
    if kind in ("lattice", "point"):
        for ax in range(len(shape)):
            c = coords.copy()
            c[ax] = shape[ax] - 1 - c[ax]
            gens.append(np.ravel_multi_index(tuple(c), shape))
        if len(shape) == 2 and shape[0] == shape[1]:
            gens.append(np.ravel_multi_index((coords[1], coords[0]), shape))   # the diagonal mirror
    group = _closure(gens, n)
    _check_automorphisms(group, lattice)
    return group


def _check_automorphisms(group, lattice) -> None:
    E = _edge_set(lattice.edges)
    for g in group:
        if _edge_set(g[lattice.edges]) != E:
            raise ValueError(f"the site permutation {g.tolist()} does not map the edges of the lattice "
                             f"{lattice.shape} (periodic={lattice.periodic}) onto edges: not a symmetry of the energy")


def _custom_group(perms, lattice) -> np.ndarray:
    P = np.asarray(perms)
    n = lattice.n_sites
    if P.ndim == 1:
        P = P[None, :]
    if P.ndim != 2 or P.shape[1] != n or not np.issubdtype(P.dtype, np.integer):
        raise ValueError(f"symmetries given as an array must be integer site permutations of shape (m, {n}), "
                         f"got {P.dtype} {P.shape}")
    for g in P:
        if not np.array_equal(np.sort(g), np.arange(n)):
            raise ValueError(f"{g.tolist()} is not a permutation of the sites 0..{n - 1}")
    group = _closure(P, n)
    _check_automorphisms(group, lattice)
    return group


def _cycles(g) -> int:
    n, seen, c = len(g), np.zeros(len(g), dtype=bool), 0
    for i in range(n):
        if not seen[i]:
            c += 1
            j = i
            while not seen[j]:
                seen[j] = True
                j = g[j]
    return c


def burnside_count(group, q: int) -> int:
    """The number of orbits of ``group`` (site permutations) on ``{0..q-1}^n``:
    ``(1/|G|) sum_g q^{cycles(g)}`` (Burnside's lemma; exact integers)."""
    total = sum(int(q) ** _cycles(g) for g in np.asarray(group))
    count, rem = divmod(total, len(group))
    if rem:
        raise ValueError("the permutations do not form a group (Burnside's sum is not a multiple of |G|)")
    return count


def orbit_memory(q: int, n: int, n_orbits: int, table: bool) -> float:
    """Bytes of the reduction (estimate): one byte a code for the enumeration mask, four a
    code for the orbit table (``table``); per orbit the representative, its letters,
    weights, the lumped generator's triplets and sparse copies (``L``, ``S``) and the
    propagator's vectors."""
    codes = float(q) ** n
    k = n * (q - 1)                      # transitions out of a state
    per_orbit = 48 + n + 24 * k + 4 * 12 * (k + 1) + 24 * 8
    return codes * (1 + (4 if table else 0)) + per_orbit * float(n_orbits)


# ------------------------------------------------------------------------------- kernels
def _chunking(q: int, n: int):
    """Digits per chunk ``m`` (``q^m <= 256``, at most ``n``) and the number of chunks."""
    m = 1
    while m < n and q ** (m + 1) <= 256:
        m += 1
    return m, -(-n // m)


def _image_tables(group, q: int, n: int):
    """``tab[k, v, g]``: the code contributed by chunk ``k`` holding the digits of ``v``
    once moved by ``g`` (digit position ``p`` = site ``n-1-p``; site ``i`` goes to
    ``g[i]``).  The image of a code is ``sum_k tab[k, v_k(code), g]``."""
    m, nch = _chunking(q, n)
    qm = q ** m
    G = np.asarray(group, dtype=np.int64)
    # weight of position p once moved: q^(n-1-g[n-1-p])
    pos = np.arange(n)
    W = np.power(np.int64(q), n - 1 - G[:, n - 1 - pos])               # (|G|, n)
    v = np.arange(qm, dtype=np.int64)
    digits = (v[:, None] // np.power(np.int64(q), np.arange(m))[None, :]) % q    # (qm, m), least significant first
    tab = np.zeros((nch, qm, len(G)), dtype=np.int64)
    for k in range(nch):
        w = min(m, n - k * m)
        tab[k] = digits[:, :w] @ W[:, k * m:k * m + w].T
    return tab, qm


@pjit(cache=True)
def _mark_canonical(tab, qm, n_hi, mask):   # pragma: no cover - compiled
    # mask[c] = 1 when no group element maps code c to a smaller code.  Codes c = hi qm + v0:
    # the high chunks' part of every image is summed once per hi (H), then each code costs
    # one look-up per group element tried, and almost every code meets a smaller image
    # within two or three elements.
    nch, _, ng = tab.shape
    nblock = min(n_hi, 4096)
    for b in prange(nblock):
        H = np.empty(ng, np.int64)
        for hi in range(b * n_hi // nblock, (b + 1) * n_hi // nblock):
            H[:] = 0
            r = hi
            for k in range(1, nch):
                v = r % qm
                r //= qm
                for g in range(ng):
                    H[g] += tab[k, v, g]
            base = hi * qm
            for v0 in range(qm):
                code = base + v0
                keep = 1
                for g in range(ng):
                    if H[g] + tab[0, v0, g] < code:
                        keep = 0
                        break
                mask[code] = keep


@jit(cache=True)
def _images_min_and_fixed(code, tab, qm):   # pragma: no cover - compiled
    # (smallest image of code over the group, number of group elements fixing it); the
    # chunks are extracted once (divisions), then each element costs nch look-ups
    nch, _, ng = tab.shape
    v = np.empty(nch, np.int64)
    r = code
    for k in range(nch):
        v[k] = r % qm
        r //= qm
    best = code
    fixed = 0
    for g in range(ng):
        img = 0
        for k in range(nch):
            img += tab[k, v[k], g]
        best = min(best, img)
        if img == code:
            fixed += 1
    return best, fixed


@pjit(cache=True)
def _canonical_many(codes, tab, qm, out_min, out_fixed):   # pragma: no cover - compiled
    for i in prange(codes.size):
        out_min[i], out_fixed[i] = _images_min_and_fixed(codes[i], tab, qm)


@pjit(cache=True)
def _fill_table(reps, tab, qm, table):   # pragma: no cover - compiled
    # table[c] = the orbit of code c: every image of every representative
    nch, _, ng = tab.shape
    for a in prange(reps.size):
        code = reps[a]
        table[code] = a
        v = np.empty(nch, np.int64)
        r = code
        for k in range(nch):
            v[k] = r % qm
            r //= qm
        for g in range(ng):
            img = 0
            for k in range(nch):
                img += tab[k, v[k], g]
            table[img] = a


@jit(cache=True)
def _orbit_of(code, reps, table, tab, qm):   # pragma: no cover - compiled
    if table.size:
        return np.int64(table[code])
    best, _ = _images_min_and_fixed(code, tab, qm)
    return np.int64(np.searchsorted(reps, best))


@pjit(cache=True)
def _lumped_columns(reps, q, n, beta_E, table, tab, qm, kind, rows, vals, counts):   # pragma: no cover - compiled
    # Column A of the lumped generator, in slots A (k+1) .. A (k+1) + counts[A]: for every
    # site s and other letter a, the orbit B of the changed state and the rate of the move
    # (Glauber: kind 0, Metropolis: kind 1), summed over equal B (sum_{j in B} L[j, i]),
    # moves inside A dropped (the lumped chain does not see them) and the diagonal minus
    # the sum of the rest; rows sorted.  Energies are the orbits' (E is invariant), so
    # beta_E[B] is E/T of the new state.
    k = n * (q - 1)
    for A in prange(reps.size):
        code = reps[A]
        orb = np.empty(q, np.int64)
        be = np.empty(q, np.float64)
        dst = np.empty(k + 1, np.int64)
        rate = np.empty(k + 1, np.float64)
        m = 0
        w = np.int64(1)
        for s in range(n - 1, -1, -1):          # site s has weight q^(n-1-s)
            c = (code // w) % q
            for a in range(q):
                orb[a] = A if a == c else _orbit_of(code + (a - c) * w, reps, table, tab, qm)
                be[a] = beta_E[orb[a]]
            lo = be[0]
            z = 1.0
            if kind == 0:
                for a in range(1, q):
                    lo = min(lo, be[a])
                z = 0.0
                for a in range(q):
                    z += math.exp(lo - be[a])
            for t in range(1, q):
                a = (c + t) % q
                if orb[a] == A:
                    continue
                dst[m] = orb[a]
                if kind == 0:
                    rate[m] = math.exp(lo - be[a]) / z
                else:
                    rate[m] = math.exp(min(0.0, be[c] - be[a])) / (q - 1)
                m += 1
            w *= q
        out = 0.0
        for i in range(m):
            out += rate[i]
        dst[m] = A
        rate[m] = -out
        m += 1
        for i in range(1, m):                   # insertion sort by row (k + 1 entries)
            d, r = dst[i], rate[i]
            j = i - 1
            while j >= 0 and dst[j] > d:
                dst[j + 1] = dst[j]
                rate[j + 1] = rate[j]
                j -= 1
            dst[j + 1] = d
            rate[j + 1] = r
        base = A * (k + 1)
        c = 0
        for i in range(m):
            if c > 0 and rows[base + c - 1] == dst[i]:
                vals[base + c - 1] += rate[i]
            else:
                rows[base + c] = dst[i]
                vals[base + c] = rate[i]
                c += 1
        counts[A] = c


@pjit(cache=True)
def _compact(rows, vals, counts, width, indptr, out_rows, out_vals):   # pragma: no cover - compiled
    for A in prange(counts.size):
        for i in range(counts[A]):
            out_rows[indptr[A] + i] = rows[A * width + i]
            out_vals[indptr[A] + i] = vals[A * width + i]


@pjit(cache=True)
def _dirichlet_rows(indptr, indices, data, reverse, p, lf, out):   # pragma: no cover - compiled
    # out[j] = sum_{i != j, p_i, p_j > 0} flux (lf_j - lf_i), flux = L[i, j] p_j - L[j, i] p_i
    # (finite.dirichlet_form's terms, the reverse rate L[i, j] = L[j, i] pi_i / pi_j by
    # detailed balance, grouped by row; summed outside: the same bits on any number of threads)
    for j in prange(indptr.size - 1):
        acc = 0.0
        if p[j] > 0:
            for e in range(indptr[j], indptr[j + 1]):
                i = indices[e]
                if i != j and p[i] > 0:
                    acc += (reverse[e] * p[j] - data[e] * p[i]) * (lf[j] - lf[i])
        out[j] = acc


@pjit(cache=True)
def _all_orbits(size, reps, tab, qm, out):   # pragma: no cover - compiled
    for c in prange(size):
        best, _ = _images_min_and_fixed(np.int64(c), tab, qm)
        out[c] = np.searchsorted(reps, best)


# ------------------------------------------------------------------------------- the space
class SymmetricSpace:
    """The orbits of a lattice's symmetry group on the states of a :class:`~.finite.PairEnergy`,
    with the lumped Gibbs law: the state space of exact master equations started from
    symmetric laws (module docstring).

    energy : a :class:`~.finite.PairEnergy` (its lattice gives the group).
    temperature : ``T > 0``.
    symmetries : ``"lattice"`` (default: translations of a periodic lattice and its point
        group), ``"translations"``, ``"point"``, ``"none"``, or an integer array of site
        permutations (generators; their closure is taken, each checked to map edges onto
        edges).
    lookup : how a neighbour's orbit is found: ``"table"`` (the orbit of every code,
        ``4 q^n`` bytes), ``"canonical"`` (its smallest image and a binary search) or
        ``"auto"`` (the table when it takes less than a quarter of the memory available).

    Attributes (one entry per orbit, sorted by representative): ``reps`` (the smallest
    code of each orbit, the lexicographic index of :mod:`.finite`), ``codes`` (its
    letters, (size, n) int8), ``orbit_size`` (``|A|``), ``E``, ``log_pi`` and ``pi``
    (the lumped law ``|A| pi(i)``), ``log_pi_state`` (``log pi(i)`` of one member);
    ``log_z`` is the full ``log Z``; ``size`` the number of orbits, ``n_states`` ``q^n``,
    ``group`` the site permutations (|G|, n).  Refuses (:class:`~.finite.TooManyStatesError`)
    more than :data:`MAX_ORBITS` orbits, counted by Burnside's lemma before enumerating,
    and (``MemoryError``) what would not fit in memory, with the numbers.
    """

    def __init__(self, energy, temperature: float = 1.0, symmetries="lattice", lookup: str = "auto"):
        if not isinstance(energy, PairEnergy):
            raise TypeError(f"a symmetric space needs a PairEnergy on a Lattice (its symmetries come from the "
                            f"lattice), got {type(energy).__name__}; use FiniteSpace for other energies")
        if lookup not in ("auto", "table", "canonical"):
            raise ValueError(f"lookup must be 'auto', 'table' or 'canonical', got {lookup!r}")
        self.energy = energy
        self.q, self.n_sites = energy.q, energy.n_sites
        self.temperature = positive_float(temperature, "temperature")
        lat = energy.lattice
        if isinstance(symmetries, str):
            self.group = lattice_symmetries(lat, symmetries)
            self.symmetries = symmetries
        else:
            self.group = _custom_group(symmetries, lat)
            self.symmetries = "custom"
        self.group.setflags(write=False)
        q, n = self.q, self.n_sites
        self.n_states = q ** n                                    # a Python int (exact)
        self.size = burnside_count(self.group, q)
        what = (f"{energy.name} on {'x'.join(map(str, lat.shape))} sites (q = {q}, n = {n}): {q}^{n} = "
                f"{self.n_states:.4g} states in {self.size:.4g} orbits of {len(self.group)} symmetries "
                f"({self.symmetries}, Burnside)")
        if self.size > MAX_ORBITS:
            need = orbit_memory(q, n, self.size, False)
            raise TooManyStatesError(
                f"{what}: more than the {MAX_ORBITS} orbits ({MAX_ORBITS:.3g}) whose master equation this toolkit "
                f"solves exactly (it would need about {need / 2**30:.3g} GiB and a pass over {self.n_states:.3g} codes). "
                "Within reach: 5x5 Ising (1.7e5 orbits), 4x4 Potts q = 3 (3.6e5), 3x4 q = 4 (3.7e5), rings of "
                "up to 27 Ising spins (2.5e6); out of reach: 5x6 Ising (9.0e6 orbits), 6x6 Ising (2.4e8), 4x4 "
                "Potts q = 4 (3.4e7), 4x5 q = 3 (4.4e7), 5x5 q = 3 (4.2e9). Use particles (particles.jumps) for these")
        if self.n_states >= 2 ** 62:
            raise TooManyStatesError(f"{what}: codes past 2^62 cannot be enumerated")
        if lookup == "auto":
            table = 4.0 * self.n_states <= TABLE_FRACTION * available_memory() and self.n_states < 2 ** 31
        else:
            table = lookup == "table"
            if table and self.n_states >= 2 ** 31:
                raise ValueError(f"{what}: an orbit table of {self.n_states:.3g} codes is too large; use lookup='canonical'")
        self.lookup = "table" if table else "canonical"
        check_memory(orbit_memory(q, n, self.size, table), f"the orbit reduction of {what}")
        self._tab, self._qm = _image_tables(self.group[1:], q, n)
        self.reps = self._enumerate()
        if self.reps.size != self.size:   # Burnside and the enumeration disagree: a bug, never a result
            raise RuntimeError(f"{what}: enumerated {self.reps.size} orbits, Burnside's lemma says {self.size}")
        _, fixed = self._canonical(self.reps)
        self.orbit_size = len(self.group) // (fixed + 1)           # orbit-stabiliser (+1: the identity)
        if int(self.orbit_size.sum()) != self.n_states:
            raise RuntimeError(f"{what}: orbit sizes sum to {int(self.orbit_size.sum())}, not {self.n_states}")
        self._table = np.zeros(0, dtype=np.int32)
        if table:
            self._table = np.full(self.n_states, -1, dtype=np.int32)
            _fill_table(self.reps, self._tab, self._qm, self._table)
            if self._table.min() < 0:    # a code no representative reaches: a bug, never a result
                raise RuntimeError(f"{what}: {int(np.sum(self._table < 0))} codes in no orbit")
        self.codes = self.decode(self.reps)
        self.E = energy.energy(self.codes)
        lw = np.log(self.orbit_size) - self.E / self.temperature
        self.log_z = float(logsumexp(lw))
        self.log_pi = lw - self.log_z
        self.pi = np.exp(self.log_pi)
        self.log_pi_state = -self.E / self.temperature - self.log_z
        for a in (self.reps, self.codes, self.orbit_size, self.E, self.log_pi, self.pi, self.log_pi_state):
            a.setflags(write=False)

    def __repr__(self):
        return (f"SymmetricSpace({self.energy.name} {self.energy.lattice.shape}, q={self.q}, T={self.temperature:g}, "
                f"|G|={len(self.group)}, {self.size} orbits of {self.n_states} states)")

    # enumeration ----------------------------------------------------------------------
    def _enumerate(self) -> np.ndarray:
        if len(self.group) == 1:
            return np.arange(self.n_states, dtype=np.int64)
        mask = np.empty(self.n_states, dtype=np.uint8)
        _mark_canonical(self._tab, np.int64(self._qm), np.int64(self.n_states // self._qm), mask)
        return np.flatnonzero(mask).astype(np.int64)

    def _canonical(self, codes):
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        best = np.empty_like(codes)
        fixed = np.empty_like(codes)
        if len(self.group) == 1:
            return codes.copy(), np.zeros_like(codes)
        _canonical_many(codes, self._tab, np.int64(self._qm), best, fixed)
        return best, fixed

    def decode(self, codes) -> np.ndarray:
        """The letters (N, n) int8 of codes (lexicographic indices)."""
        c = np.array(codes, dtype=np.int64).ravel()
        out = np.empty((c.size, self.n_sites), dtype=np.int8)
        for i in range(self.n_sites - 1, -1, -1):   # a loop over sites
            out[:, i] = c % self.q
            c //= self.q
        return out

    def encode(self, configs) -> np.ndarray:
        """The codes (lexicographic indices) of configurations (N, n) or (n,)."""
        c = np.atleast_2d(np.asarray(configs))
        if c.shape[1] != self.n_sites or not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() >= self.q:
            raise ValueError(f"a configuration is {self.n_sites} letters in 0..{self.q - 1}, got "
                             f"{np.asarray(configs).tolist() if c.size <= 64 else c.shape}")
        w = np.power(np.int64(self.q), np.arange(self.n_sites - 1, -1, -1))
        return c.astype(np.int64) @ w

    def orbit_of(self, configs) -> np.ndarray:
        """The orbit index of each configuration (N, n) (or one, (n,))."""
        codes = self.encode(configs)
        if self._table.size:
            return self._table[codes].astype(np.int64)
        best, _ = self._canonical(codes)
        return np.searchsorted(self.reps, best)

    def orbit_index(self) -> np.ndarray:
        """The orbit of every state, in the order of :class:`~.finite.FiniteSpace` (only for
        ``q^n <= MAX_STATES``: a full-space vector)."""
        self._check_full("the orbit of every state")
        if self._table.size:
            return self._table.astype(np.int64)
        out = np.empty(self.n_states, dtype=np.int64)
        _all_orbits(np.int64(self.n_states), self.reps, self._tab, np.int64(self._qm), out)
        return out

    def _check_full(self, what):
        if self.n_states > MAX_STATES:
            raise TooManyStatesError(f"{what} is a vector of {self.q}^{self.n_sites} = {self.n_states:.4g} entries, "
                                     f"more than the {MAX_STATES} of a full space; use laws on the {self.size} orbits")

    # laws -------------------------------------------------------------------------------
    def check_law(self, p, name: str = "p") -> np.ndarray:
        """A law on the orbits (``pt[A]`` = the mass of orbit ``A``)."""
        p = finite_array(p, name)
        if p.shape != (self.size,):
            hint = (" (a law on all states: lump it with space.lump(p))" if p.shape == (self.n_states,) else "")
            raise ValueError(f"{name} must be a law on the {self.size} orbits, got shape {p.shape}{hint}")
        return probability_vector(p, name)

    def point_mass(self, config) -> np.ndarray:
        """The law on orbits of the uniform law on the orbit of ``config``: the point mass at
        ``config`` symmetrised (the point mass itself when ``config`` is symmetric, as all up
        ``[1] * n`` or a single colour)."""
        p = np.zeros(self.size)
        p[int(self.orbit_of(np.asarray(config).reshape(1, -1))[0])] = 1.0
        return p

    def from_state_weights(self, weights) -> np.ndarray:
        """The symmetric law ``p(i) ~ w_A`` for ``i`` in orbit ``A`` (``weights`` one
        non-negative value per orbit, e.g. a function of the energy and magnetisation),
        as a law on orbits: ``pt_A = |A| w_A / sum_B |B| w_B``."""
        w = finite_array(weights, "weights", shape=(self.size,))
        if w.min() < 0 or not w.any():
            raise ValueError("weights must be non-negative and not all zero")
        m = self.orbit_size * w
        return m / m.sum()

    def lump(self, p, rtol: float = 1e-12) -> np.ndarray:
        """A symmetric law on all states (``q^n <= MAX_STATES``; (N_states,) or (T, N_states))
        as a law on orbits; refuses a law that is not constant on orbits (relative to its
        largest entry, beyond ``rtol``)."""
        P = np.atleast_2d(finite_array(p, "p"))
        if P.shape[1] != self.n_states:
            raise ValueError(f"a law on all states has {self.n_states} entries, got shape {np.shape(p)}")
        idx = self.orbit_index()
        out = np.stack([np.bincount(idx, weights=row, minlength=self.size) for row in P])
        spread = np.abs(P - (out / self.orbit_size)[:, idx]).max()
        if spread > rtol * max(np.abs(P).max(), 1e-300):
            raise ValueError(f"the law is not constant on the orbits of the {len(self.group)} symmetries (it differs "
                             f"from its orbit average by {spread:.3g}): it is not symmetric, and its dynamics leave "
                             "the symmetric sector; use FiniteSpace")
        return out[0] if np.ndim(p) == 1 else out

    def lift(self, pt) -> np.ndarray:
        """The law on all states ``p(i) = pt_A / |A|`` of laws on orbits ((size,) or (T, size))."""
        self._check_full("a law on all states")
        P = np.atleast_2d(np.asarray(pt, dtype=float))
        out = (P / self.orbit_size)[:, self.orbit_index()]
        return out[0] if np.ndim(pt) == 1 else out

    # observables ------------------------------------------------------------------------
    def magnetisation(self) -> np.ndarray:
        """Total magnetisation ``sum_i s_i`` of each orbit (Ising, q = 2)."""
        if self.q != 2:
            raise ValueError("the magnetisation is defined for q = 2 (Ising); use colour_counts() for q > 2")
        return (2 * self.codes.astype(np.int64) - 1).sum(axis=1)

    def colour_counts(self) -> np.ndarray:
        """Number of sites of each letter, (size, q)."""
        return np.stack([(self.codes == a).sum(axis=1) for a in range(self.q)], axis=1)

    def distribution(self, values, p=None):
        """The law of an observable (one value per orbit, i.e. invariant) under the law on
        orbits ``p`` (default the lumped Gibbs law): ``(support, probabilities)``; values
        within ``1e-9`` (relative) of each other are one point of the support."""
        support, inv = _support(values)
        w = self.pi if p is None else np.asarray(p, dtype=float)
        return support, np.bincount(inv, weights=w, minlength=support.size)

    def mean(self, values, p=None) -> float:
        w = self.pi if p is None else p
        return float(np.dot(w, values))


def _support(values, rtol: float = 1e-9):
    """Sorted distinct values (those within rtol of the scale merged: sums of the same pair
    values in another order differ by round-off) and each value's index in them."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    sv = v[order]
    tol = rtol * max(1.0, float(np.abs(v).max()) if v.size else 1.0)
    new = np.concatenate([[True], np.diff(sv) > tol])
    group = np.cumsum(new) - 1
    inv = np.empty(v.size, dtype=np.int64)
    inv[order] = group
    return sv[new], inv


# ------------------------------------------------------------------------------- generators
def _lumped(space: SymmetricSpace, kind: int) -> sp.csr_matrix:
    q, n, N = space.q, space.n_sites, space.size
    width = n * (q - 1) + 1
    check_memory(2 * 16.0 * N * width, f"a lumped generator with {N * width} entries")
    rows = np.empty(N * width, dtype=np.int64)
    vals = np.empty(N * width)
    counts = np.empty(N, dtype=np.int64)
    _lumped_columns(space.reps, np.int64(q), np.int64(n), space.E / space.temperature, space._table, space._tab,
                    np.int64(space._qm), np.int64(kind), rows, vals, counts)
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    out_rows = np.empty(indptr[-1], dtype=np.int64)
    out_vals = np.empty(indptr[-1])
    _compact(rows, vals, counts, np.int64(width), indptr, out_rows, out_vals)
    del rows, vals
    if out_rows.size and (out_rows.min() < 0 or out_rows.max() >= N):   # a failed look-up: a bug, never a result
        raise RuntimeError(f"the lumped generator of {space!r} has moves to no orbit")
    return sp.csc_matrix((out_vals, out_rows, indptr), shape=(N, N)).tocsr()


def lumped_glauber(space: SymmetricSpace) -> sp.csr_matrix:
    """``Lt[B, A] = sum_{j in B} L[j, i]`` (``i`` the representative of ``A``) of the
    heat-bath dynamics of :func:`~.finite.glauber` (site resampled from its conditional
    law at rate 1)."""
    return _lumped(space, 0)


def lumped_metropolis(space: SymmetricSpace) -> sp.csr_matrix:
    """The lumped generator of :func:`~.finite.metropolis` (each other letter proposed at
    rate ``1/(q-1)``, accepted with ``min(1, pi(c')/pi(c))``)."""
    return _lumped(space, 1)


LUMPED_DYNAMICS = {"glauber": lumped_glauber, "metropolis": lumped_metropolis}


class SymmetricMasterEquation(MasterEquation):
    """Exact ``pt_t = exp(t Lt) pt_0`` on the orbits of a :class:`SymmetricSpace`: the law
    of a symmetric start, lumped (module docstring).

    Everything of :class:`~.finite.MasterEquation` applies to the lumped chain, and gives
    the full chain's numbers: :meth:`solve` (laws on orbits; the same exact propagator and
    tolerance), :meth:`kl` (``KL(p_t || pi)`` of the full law), :meth:`dirichlet`,
    :meth:`kl_rate`, :meth:`spectral_gap` (of the symmetric sector).  The lumped generator
    is checked for detailed balance towards the lumped Gibbs law at construction."""

    def __init__(self, space: SymmetricSpace, dynamics: str = "glauber"):
        if not isinstance(space, SymmetricSpace):
            raise TypeError(f"SymmetricMasterEquation needs a SymmetricSpace, got {type(space).__name__}; "
                            "use MasterEquation for a FiniteSpace")
        if dynamics not in LUMPED_DYNAMICS:
            raise ValueError(f"dynamics must be one of {sorted(LUMPED_DYNAMICS)}, got {dynamics!r}")
        super().__init__(space, LUMPED_DYNAMICS[dynamics](space))   # a matrix: checked (detailed balance)
        self.dynamics = dynamics

    def dirichlet(self, P) -> np.ndarray:
        """The Dirichlet form of :func:`~.finite.dirichlet_form` (the same terms, ``inf`` where
        the flow fills zeros of ``p``), summed by a compiled loop over the rows of ``Lt``
        with the reverse rates computed once (4x4 Potts q = 3, 1.1e7 entries: ~0.05 s a law
        instead of ~2 s)."""
        L, lp = self.L, self.space.log_pi
        if getattr(self, "_rows", None) is None:
            C = L.tocoo()
            self._rows = (L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data,
                          L.data * np.exp(lp[C.col] - lp[C.row]))
        out = []
        for p in np.atleast_2d(P):
            p = np.ascontiguousarray(p, dtype=float)
            if _fills_zeros(L, p):
                out.append(math.inf)
                continue
            with np.errstate(divide="ignore", invalid="ignore"):   # only the live states' logs are used
                lf = np.log(p) - lp
            terms = np.empty(p.size)
            _dirichlet_rows(*self._rows, p, lf, terms)
            out.append(0.5 * float(np.sum(terms)))
        return np.array(out)

    def law(self, values, P):
        """The law of an invariant observable (one value per orbit) under each law of ``P``:
        ``(support, probabilities (len(P), len(support)))``."""
        support, inv = _support(values)
        P = np.atleast_2d(P)
        return support, np.stack([np.bincount(inv, weights=p, minlength=support.size) for p in P])

    def magnetisation_law(self, P):
        """Laws of the total magnetisation (Ising) at each law of ``P``."""
        return self.law(self.space.magnetisation(), P)

    def energy_law(self, P):
        """Laws of the energy at each law of ``P``."""
        return self.law(self.space.E, P)

