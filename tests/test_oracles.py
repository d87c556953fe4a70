import numpy as np
import pytest

from rlhf_env.errors import QueryBudgetExceeded
from rlhf_env.oracles import BradleyTerryOracle, QueryLedger, sigmoid


def table_reward(values):
    def r(prompts, responses):
        return np.array([values[a] for a in responses], dtype=float)

    return r


def test_bt_frequency_matches_sigmoid():
    rewards = {"a": 0.0, "b": 0.7, "c": -1.5, "d": 2.0}
    oracle = BradleyTerryOracle(table_reward(rewards))
    rng = np.random.default_rng(0)
    n = 40_000
    for x, y in [("a", "b"), ("c", "d"), ("d", "a"), ("a", "a")]:
        pref, r1, r2 = oracle.preferences(["p"] * n, [x] * n, [y] * n, rng)
        p = sigmoid(np.array(rewards[x] - rewards[y]))
        # within 5 binomial standard deviations
        assert abs(pref.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_bt_temperature_and_deterministic_mode():
    rewards = {"a": 0.0, "b": 1.0}
    hot = BradleyTerryOracle(table_reward(rewards), temperature=2.0)
    assert hot.probability(["p"], ["b"], ["a"])[0] == pytest.approx(1 / (1 + np.exp(-0.5)))
    det = BradleyTerryOracle(table_reward(rewards), deterministic=True)
    rng = np.random.default_rng(0)
    pref, _, _ = det.preferences(["p"] * 100, ["b"] * 100, ["a"] * 100, rng)
    assert pref.all()
    ties, _, _ = det.preferences(["p"] * 2000, ["a"] * 2000, ["a"] * 2000, rng)
    assert 0.45 < ties.mean() < 0.55  # ties broken by a fair coin


def test_sigmoid_is_stable():
    z = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    out = sigmoid(z)
    assert np.all(np.isfinite(out))
    assert out[0] == 0.0 and out[-1] == 1.0 and out[2] == 0.5


def test_ledger_charges_only_on_success():
    ledger = QueryLedger(5)
    with ledger.charge(3):
        pass
    assert ledger.used == 3
    with pytest.raises(RuntimeError), ledger.charge(2):
        raise RuntimeError("oracle failed")
    assert ledger.used == 3
    with pytest.raises(QueryBudgetExceeded, match="3 of 5 queries used, 4 more requested"):
        with ledger.charge(4):
            pass
    assert ledger.used == 3 and ledger.left == 2
