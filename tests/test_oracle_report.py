"""The oracle report on the language envs: every preset measures within tolerance of its
targets on TinyInstruct-v0 (small) and HH-RLHF-v0 (tiny preset), and a mis-stated oracle is
caught.

Each report labels ~350 pairs x 2 orders x 200 draws (~140k labels) with a fixed seed; the
tolerance is 4 binomial standard errors under the oracle's own model (tests over 15 seeds
showed standardised errors with sd ~1.0 and none beyond 3.2).
"""

import numpy as np
import pytest

import rlhf_env
from rlhf_env.oracles import (
    PRESET_INFO,
    Annotator,
    BradleyTerry,
    Choice,
    LabelFlips,
    SimulatedAnnotators,
    list_presets,
    report,
    report_pairs,
)
from tests.conftest import SMALL_KWARGS

ENVS = ("TinyInstruct-v0", "HH-RLHF-v0")


@pytest.fixture(scope="module")
def envs(request):
    out = {"TinyInstruct-v0": request.getfixturevalue("tiny_env")}
    try:
        out["HH-RLHF-v0"] = request.getfixturevalue("hh_env")
    except pytest.skip.Exception:
        pass
    return out


@pytest.fixture(scope="module")
def pairs(envs):
    return {name: report_pairs(env, n_prompts=64, n_samples=4, seed=0)
            for name, env in envs.items()}


def get(envs, pairs, env_id):
    if env_id not in envs:
        pytest.skip(f"{env_id} is not available here")
    return envs[env_id], pairs[env_id]


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_measures_within_tolerance_of_its_targets(envs, pairs, env_id, preset):
    env, ps = get(envs, pairs, env_id)
    used = env.unwrapped.queries_used
    r = report(env, preset, pairs=ps, n_draws=200, seed=1)
    assert env.unwrapped.queries_used == used  # the report charges nothing
    assert r.n_pairs == len(ps) >= 200 and r.n_draws == 200
    for key, s in r.statistics.items():
        if key == "longer_chosen" and s.n_labels == 0:
            continue
        assert s.n_labels >= 16 * 2 * 200, key
        assert s.target is not None and s.within, (key, s, r.format())
        if s.nominal is not None and (key != "longer_chosen" or r.equal_gap == 0):
            # a fixed target: the exact expectation on these pairs is the promised value
            assert s.target == pytest.approx(s.nominal, abs=1e-9), (key, s)
    assert r.statistics["longer_chosen"].n_labels >= 16 * 2 * 200
    assert r.ok and "| agreement with the gold preference" in r.format()


def test_tinyinstruct_has_exactly_equal_reward_pairs_for_the_length_target(envs, pairs):
    """TinyInstruct's graded program ties exactly, so human-like's 0.64 is checked exactly."""
    env, ps = get(envs, pairs, "TinyInstruct-v0")
    r = report(env, "human-like", pairs=ps, n_draws=200, seed=2)
    s = r.statistics["longer_chosen"]
    assert r.equal_gap == 0.0 and r.n_equal_pairs >= 16
    assert s.target == pytest.approx(0.64, abs=1e-12) and s.within
    assert abs(s.measured - 0.64) < 4 * s.stderr
    first = r.statistics["first_chosen"]
    assert first.target == pytest.approx(0.52, abs=1e-12) and first.within


class Misstated(LabelFlips):
    """Labels with p = 0.25 but claims p = 0.15: the report must catch it."""

    def choice_probabilities(self, prompts, responses_1, responses_2):
        base = self.oracle.choice_probabilities(prompts, responses_1, responses_2)
        return Choice(0.7 * base.first + 0.15, 0.7 * base.tie)


@pytest.mark.parametrize("env_id", ENVS)
def test_a_misstated_oracle_fails_the_report(envs, pairs, env_id):
    env, ps = get(envs, pairs, env_id)
    lying = Misstated(BradleyTerry(deterministic=True), 0.25)
    r = report(env, lying, pairs=ps, n_draws=200, seed=3)
    assert not r.ok and r.statistics["gold_agreement"].within is False
    assert "NO" in r.format()


def test_a_too_hot_oracle_fails_the_report_on_tinyinstruct(envs, pairs):
    env, ps = get(envs, pairs, "TinyInstruct-v0")

    class Hot(BradleyTerry):
        def choice_probabilities(self, prompts, responses_1, responses_2):
            c = super().choice_probabilities(prompts, responses_1, responses_2)
            n = len(prompts)
            r = self.rewards(list(prompts) * 2, list(responses_1) + list(responses_2))
            return Choice(1 / (1 + np.exp(-(r[:n] - r[n:]))), c.tie)  # temperature 1

    r = report(env, Hot(3.0), pairs=ps, n_draws=200, seed=4)
    assert r.statistics["gold_agreement"].within is False


@pytest.mark.parametrize("env_id", ENVS)
def test_ties_and_pools_measure_within_tolerance(envs, pairs, env_id):
    env, ps = get(envs, pairs, env_id)
    gaps = np.abs(ps.gold_1 - ps.gold_2)
    margin = float(np.quantile(gaps, 0.3)) + 1e-12  # about 30 % of the pairs tie
    oracle = LabelFlips(SimulatedAnnotators(
        [Annotator(0.0, tie_margin=margin, length_logit=0.2),
         Annotator(float(np.median(gaps)) + 1e-6, position_logit=0.5, length_rate=0.3)],
        weights=[2, 1]), 0.1)
    r = report(env, oracle, pairs=ps, n_draws=200, seed=5)
    assert r.ok, r.format()
    assert r.statistics["tie_rate"].measured > 0.1 and r.preset is None


def test_two_tinyinstruct_envs_differing_only_in_the_oracle_evaluate_alike(tiny_env):
    noisy = rlhf_env.make("TinyInstruct-v0", **SMALL_KWARGS["TinyInstruct-v0"],
                          oracle="alpacafarm")
    assert noisy.unwrapped.oracle_config["name"] == "label-flips"
    assert (noisy.unwrapped.offline_dataset["chosen"]
            != tiny_env.unwrapped.offline_dataset["chosen"])
    policy = tiny_env.unwrapped.reference
    options = {"n_prompts": 6, "n_samples": 2, "seed": 3, "best_of_n": (1, 2)}
    assert rlhf_env.evaluate(policy, noisy, **options) == rlhf_env.evaluate(
        policy, tiny_env, **options)


def test_presets_table_in_the_report_names_the_source(envs, pairs):
    env, ps = get(envs, pairs, "TinyInstruct-v0")
    text = report(env, "alpacafarm", pairs=ps, n_draws=20).format()
    assert PRESET_INFO["alpacafarm"].source in text and "0.65" in text
