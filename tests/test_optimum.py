"""The Monte Carlo J(pi*) against the exact value of an exact env (an independent oracle)."""

import pytest

import rlhf_env
from rlhf_env.optimum import optimal_objective


def test_monte_carlo_j_star_approaches_the_exact_value_from_below():
    env = rlhf_env.make("LinearBT-v0", seed=0)
    exact = rlhf_env.evaluate(env.unwrapped.reference, env)["optimal_objective"]
    mc = optimal_objective(env, n_samples=4096, seed=1)
    assert mc["optimal_objective"] == pytest.approx(exact, abs=0.03)
    # Jensen: few samples underestimate it, more samples less so
    assert mc["optimal_objective/n=4"] < mc["optimal_objective/n=256"] < exact + 0.03
    assert mc["optimal_objective/n=4"] < exact - 0.1
    assert optimal_objective(env, n_samples=4096, seed=1) == mc  # cached on the judge
    assert env.unwrapped.queries_used == 0  # privileged: outside the budget


def test_it_refuses_bad_sample_counts():
    with pytest.raises(rlhf_env.InvalidArgumentError, match="n_samples"):
        optimal_objective(rlhf_env.make("LinearBT-v0"), n_samples=0)
