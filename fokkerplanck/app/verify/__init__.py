"""The battery of theory checks behind ``fpk verify``.

The framework lives in :mod:`.framework`; each group module (:mod:`.grids`, :mod:`.ensembles`,
:mod:`.theory`, :mod:`.lattices`, :mod:`.paths`, :mod:`.latent`) registers its groups on import, and
:mod:`.closed_forms` holds the Gaussian closed forms they share.

Each check is a function ``check(quick: bool, report: Report | None) -> list[Check]``
registered with :func:`register`; every :class:`Check` states one comparison of its
measured value, built with :func:`at_most` (``x <= tol``), :func:`at_least`
(``x >= tol``) or :func:`near` (``|x - target| <= tol``), strict when asked, and
passes exactly when that comparison holds.  :func:`run_checks` records every warning
raised while a group of checks runs and attaches it to the group's checks (shown as
``PASS*``): a check's set-up should raise none.  Tests call the same functions.
With a :class:`Report`, checks also leave their trajectories (HDF5) and
figures (PNG) in the report folder, and :func:`write_summary` writes
``summary.md`` (the table, the figures, the files) and ``checks.json``.
"""
from fokkerplanck.app.verify.framework import (
    CHECKS,
    COMPARISONS,
    ONE_THREAD,
    Check,
    Report,
    at_least,
    at_most,
    format_table,
    near,
    register,
    run_checks,
    run_group,
    tally,
    write_summary,
)

# The check groups register themselves on import, in this order (the order ``fpk verify`` runs them).
from fokkerplanck.app.verify import grids, ensembles, theory, lattices, paths, latent  # noqa: F401  isort: skip

__all__ = ["CHECKS", "COMPARISONS", "ONE_THREAD", "Check", "Report", "at_least", "at_most", "format_table", "near",
           "register", "run_checks", "run_group", "tally", "write_summary"]
