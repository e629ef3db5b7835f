import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _float_errors_raise():
    """Floating-point errors in the code under test raise (overflow, invalid, divide)."""
    with np.errstate(all="raise", under="ignore"):
        yield


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


# numba kernels of U(x) = p[0] x^2 / 2 in 1D, as source text: the tests that need them in
# a file of their own (a module that must never be imported, a script's __main__)
QUADRATIC_KERNELS_1D = '''
@numba.njit
def value(x, p):
    return 0.5 * p[0] * x[0] ** 2


@numba.njit
def grad(x, p, out):
    out[0] = p[0] * x[0]


@numba.njit
def lap(x, p):
    return p[0]
'''


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With FPK_REQUIRE_EXTRAS=1 (CI's step that installs torch and JAX), a test of an optional
    extra that skips because the extra cannot be imported fails instead: that step must run them."""
    outcome = yield
    rep = outcome.get_result()
    if (os.environ.get("FPK_REQUIRE_EXTRAS") == "1" and rep.skipped and item.get_closest_marker("extras")
            and "could not import" in str(rep.longrepr)):
        rep.outcome = "failed"
