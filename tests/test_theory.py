"""Composition keeps a Gibbs invariant law (the checks behind fpk verify)."""
import numpy as np

from fokkerplanck import FokkerPlanck, Grid, energies as E
from fokkerplanck.theory.theorem import composition_check, stationary_law


def test_compositions_keep_their_gibbs_law():
    res = composition_check(Grid([(-9, 9)] * 2, 80))
    assert set(res) == {"conjunction", "disjunction", "negation"}
    for name, r in res.items():
        assert r.confining, name
        assert r.residual < 1e-14, (name, r)
        assert r.forward_error < r.forward_tolerance, (name, r)


def test_stationary_law_is_independent_of_the_gibbs_formula():
    # negative control: the stationary law of one energy is far from another's Gibbs law,
    # and equals its own to round-off
    g = Grid([(-9, 9)] * 2, 64)
    A, B = E.GaussianMixture.paper_A(), E.GaussianMixture.paper_B()
    fa = FokkerPlanck(A, g)
    pa = stationary_law(fa)
    assert np.abs(pa - FokkerPlanck(B, g).gibbs).sum() * g.cell_volume > 1.0
    # A's four modes are far apart: gap 2.8e-7, and the forward error is ~ eps / gap
    gap = fa.spectral_gap()
    assert np.abs(pa - fa.gibbs).sum() * g.cell_volume < 1e-12 + 1e-14 / gap
