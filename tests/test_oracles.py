import threading

import numpy as np
import pytest

import rlhf_env
from rlhf_env.errors import InvalidArgumentError, QueryBudgetExceeded
from rlhf_env.oracles import BradleyTerry, Labels, Oracle, OracleContext, QueryLedger, sigmoid


def table_reward(values):
    def r(prompts, responses):
        return np.array([values[a] for a in responses], dtype=float)

    return r


def test_bt_frequency_matches_sigmoid():
    rewards = {"a": 0.0, "b": 0.7, "c": -1.5, "d": 2.0}
    oracle = BradleyTerry().bind(OracleContext(table_reward(rewards)))
    rng = np.random.default_rng(0)
    n = 40_000
    for x, y in [("a", "b"), ("c", "d"), ("d", "a"), ("a", "a")]:
        labels = oracle.label(["p"] * n, [x] * n, [y] * n, rng)
        p = sigmoid(np.array(rewards[x] - rewards[y]))
        # within 5 binomial standard deviations
        assert abs(labels.preference.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
        first = labels.preference.astype(bool)
        assert (labels.chosen[first] == x).all() and (labels.rejected[first] == y).all()
        assert (labels.chosen[~first] == y).all() and not labels.tie.any()


def test_bt_temperature_and_deterministic_mode():
    rewards = {"a": 0.0, "b": 1.0}
    hot = BradleyTerry(2.0)
    assert hot.probability(np.array([1.0]), np.array([0.0]))[0] == pytest.approx(
        1 / (1 + np.exp(-0.5)))
    det = BradleyTerry(deterministic=True).bind(OracleContext(table_reward(rewards)))
    rng = np.random.default_rng(0)
    assert det.label(["p"] * 100, ["b"] * 100, ["a"] * 100, rng).preference.all()
    ties = det.label(["p"] * 2000, ["a"] * 2000, ["a"] * 2000, rng).preference
    assert 0.45 < ties.mean() < 0.55  # equal rewards broken by a fair coin


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_bt_rejects_bad_temperatures(bad):
    with pytest.raises(InvalidArgumentError, match="temperature"):
        BradleyTerry(bad)


def test_an_unbound_oracle_and_non_finite_rewards_are_clear_errors():
    with pytest.raises(InvalidArgumentError, match="no reward function"):
        BradleyTerry().label(["p"], ["a"], ["b"], np.random.default_rng(0))
    nan = BradleyTerry().bind(OracleContext(lambda p, r: np.array([np.nan] * len(r))))
    with pytest.raises(InvalidArgumentError, match="must be finite"):
        nan.label(["p"], ["a"], ["b"], np.random.default_rng(0))


def test_sigmoid_is_stable():
    z = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    out = sigmoid(z)
    assert np.all(np.isfinite(out))
    assert out[0] == 0.0 and out[-1] == 1.0 and out[2] == 0.5


def test_ledger_charges_only_on_success_and_is_read_only():
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
    for name in ("used", "budget", "left"):
        with pytest.raises(AttributeError):
            setattr(ledger, name, 0)


def test_concurrent_charges_never_exceed_the_budget():
    """Three threads stepping one env: every step either fits in the budget or raises."""
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=4, seed=0)
    inst = env.unwrapped.instance
    barrier = threading.Barrier(3)
    answered, refused = [], []

    def worker(i):
        rng = np.random.default_rng(i)
        barrier.wait()
        for _ in range(4):
            try:
                inst.label(["prompt-0"], ["response-0"], ["response-1"], rng)
                answered.append(1)
            except QueryBudgetExceeded:
                refused.append(1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answered) == 4 == inst.queries_used and len(refused) == 8


def test_a_custom_oracle_plugs_into_any_env_and_is_charged():
    class AlwaysFirst(Oracle):
        name = "always-first"

        def label(self, prompts, responses_1, responses_2, rng):
            return Labels.from_answers(responses_1, responses_2, np.ones(len(prompts), bool))

    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=3, oracle=AlwaysFirst())
    env.reset(seed=0)
    _, reward, _, _, info = env.step(("response-4", "response-9"))
    assert reward == 1.0 and info["chosen"] == "response-4" and info["queries_used"] == 1
    assert env.unwrapped.oracle_config == {"name": "always-first"}
    with pytest.raises(InvalidArgumentError, match="unknown oracle preset 'btt'.*Did you mean"):
        rlhf_env.make("LinearBT-v0", oracle="btt")
    with pytest.raises(InvalidArgumentError, match="oracle must be a preset name"):
        rlhf_env.make("LinearBT-v0", oracle=3)


def test_deprecated_oracle_kwargs_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match="deprecated"):
        env = rlhf_env.make("LinearBT-v0", bt_temperature=2.0, deterministic_oracle=True)
    assert env.unwrapped.oracle_config == {"name": "bt", "temperature": 2.0,
                                           "deterministic": True}
    with pytest.raises(InvalidArgumentError, match="true or false|deterministic must be"):
        with pytest.warns(FutureWarning):
            rlhf_env.make("LinearBT-v0", deterministic_oracle="no")
