"""The argmin of a saved KL trajectory against a closed-form minimum that is not a parabola."""
import numpy as np

from fokkerplanck.theory.stopping import kl_argmin


def test_kl_argmin_brackets_a_closed_form_minimum_and_refines_it_by_the_predicted_vertex_error():
    """KL(t) = e^{-3t} + t/2 has its minimum at tau = log(6)/3 = 0.5973, just before the save
    t = 0.6 (saves 0.1 apart).  The smallest saved value is at t = 0.6 (index 6), the bracket
    (0.5, 0.7) holds tau, and the vertex of the parabola through the three saves around it errs
    by -(KL'''/(6 KL'')) (dt^2 - 3 c^2), c = tau - 0.6 (Taylor; KL'' = 9 e^{-3 tau} = 1.5,
    KL''' = -4.5): 4.989e-3 predicted, 4.994e-3 measured (0.1 % apart, the next order; window
    2 %).  The three saves one later would give a bracket without tau and an error of -1.1e-2;
    the smallest save unrefined, 2.7e-3."""
    t = np.linspace(0, 2, 21)
    kl = np.exp(-3 * t) + 0.5 * t
    tau = np.log(6) / 3
    st = kl_argmin(t, kl)
    assert st.index == 6 == int(np.argmin(kl))
    assert st.bracket[0] < tau < st.bracket[1]
    k2, k3 = 9 * np.exp(-3 * tau), -27 * np.exp(-3 * tau)
    c = tau - t[6]
    predicted = -(k3 / (6 * k2)) * (0.1 ** 2 - 3 * c ** 2)
    assert abs((st.time - tau) / predicted - 1) < 0.02, (st.time - tau, predicted)
