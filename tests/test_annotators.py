"""Simulated annotators, label flips and presets: the model, the draws, the seams, bad input.

Fast (LinearBT and plain reward tables only); the oracle report on the language envs is in
tests/test_oracle_report.py.
"""

import math
import re

import numpy as np
import pytest

import rlhf_env
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.judging import instance_of
from rlhf_env.oracles import (
    PRESET_INFO,
    PRESETS,
    Annotator,
    BradleyTerry,
    LabelFlips,
    OracleContext,
    SimulatedAnnotators,
    list_presets,
    make_oracle,
    sigmoid,
)

REQUIRED = ("bt", "gao-argmax", "coste-flip25", "alpacafarm", "human-like")


def table_reward(values):
    def r(prompts, responses):
        return np.array([values[a] for a in responses], dtype=float)

    return r


def context(values):
    return OracleContext(table_reward(values))


def frequencies(oracle, pairs, n, seed=0):
    """Label each (x, y) of ``pairs`` n times; returns P(first, no tie) and P(tie) per pair."""
    rng = np.random.default_rng(seed)
    x1 = [x for x, _ in pairs for _ in range(n)]
    x2 = [y for _, y in pairs for _ in range(n)]
    labels = oracle.label(["p"] * len(x1), x1, x2, rng)
    first = (labels.preference.astype(bool) & ~labels.tie).reshape(len(pairs), n).mean(1)
    return first, labels.tie.reshape(len(pairs), n).mean(1), labels


# ---- the model: drawn labels follow the stated probabilities ---------------------------------

# responses with rewards and lengths (words): equal rewards, small and large gaps, ties
REWARDS = {"a": 0.0, "b b": 0.0, "c c c": 0.05, "d": 1.0, "e e e e e": -2.0}
PAIRS = [(x, y) for x in REWARDS for y in REWARDS if x != y]

ANNOTATORS = {
    "bt": Annotator(),
    "argmax": Annotator(0.0),
    "argmax-biased": Annotator(0.0, position_logit=0.7, length_logit=-0.3),
    "hot-logits": Annotator(2.0, position_logit=0.4, length_logit=0.25),
    "habits": Annotator(0.5, position_rate=0.2, length_rate=0.3),
    "ties": Annotator(1.0, tie_margin=0.1, position_rate=0.1, length_rate=0.2),
}


@pytest.mark.parametrize("name", list(ANNOTATORS))
def test_annotator_labels_follow_its_probabilities(name):
    a = ANNOTATORS[name]
    oracle = SimulatedAnnotators(a).bind(context(REWARDS))
    n = 6000
    first, tie, labels = frequencies(oracle, PAIRS, n)
    c = oracle.choice_probabilities(["p"] * len(PAIRS), [x for x, _ in PAIRS],
                                    [y for _, y in PAIRS])
    for got, p in ((first, c.first), (tie, c.tie)):
        se = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(got - p) <= 5 * se + 1e-12), (got, p)
    assert np.all((c.first >= 0) & (c.tie >= 0) & (c.second >= -1e-12))
    assert (labels.info["annotator"] == 0).all()


def test_the_model_worked_by_hand():
    """Step 4 with logit shifts, step 3 ties and steps 1-2 habits, computed by hand."""
    a = Annotator(2.0, position_logit=0.5, length_logit=0.1)
    # dr = 1, dlen = -3: sigmoid(1/2 + 0.5 - 0.3)
    assert a.probabilities(np.array([1.0]), np.array([-3.0])).first[0] == pytest.approx(
        1 / (1 + math.exp(-0.7)))
    argmax = Annotator(0.0, position_logit=0.5)
    c = argmax.probabilities(np.array([0.3, -0.3, 0.0]), np.zeros(3))
    np.testing.assert_allclose(c.first, [1.0, 0.0, 1 / (1 + math.exp(-0.5))])
    h = Annotator(1.0, position_rate=0.2, length_rate=0.5, tie_margin=1.0)
    # dr = 0.5 (a tie if judged), dlen = +2: first = 0.2 + 0.8 * 0.5; tie = 0.8 * 0.5
    c = h.probabilities(np.array([0.5]), np.array([2.0]))
    assert c.first[0] == pytest.approx(0.6) and c.tie[0] == pytest.approx(0.4)
    # dlen = -2: the length habit picks the second
    c = h.probabilities(np.array([0.5]), np.array([-2.0]))
    assert c.first[0] == pytest.approx(0.2) and c.second[0] == pytest.approx(0.4)


def test_argmax_annotator_is_gao_argmax_and_bt_annotator_is_bt():
    rng = np.random.default_rng(1)
    dr = rng.normal(size=50)
    dr[:5] = 0.0
    bt, det = BradleyTerry(), BradleyTerry(deterministic=True)
    np.testing.assert_allclose(Annotator(1.0).judgement(dr, np.zeros(50)),
                               bt.probability(dr, np.zeros(50)))
    np.testing.assert_allclose(Annotator(0.0).judgement(dr, np.zeros(50)),
                               det.probability(dr, np.zeros(50)))


def test_calibrated_habits_hit_their_targets_exactly_on_any_pairs():
    a = Annotator.calibrated(first=0.52, longer=0.64, temperature=0.7)
    assert a.position_rate == pytest.approx(0.04) and a.length_rate == pytest.approx(0.28 / 0.96)
    rng = np.random.default_rng(0)
    dr, dlen = rng.normal(size=200) * 3, rng.integers(-5, 6, size=200).astype(float)
    # both orders of every pair: (dr, dlen) and (-dr, -dlen)
    c, s = a.probabilities(dr, dlen), a.probabilities(-dr, -dlen)
    p_first = np.mean(np.concatenate([c.first + c.tie / 2, s.first + s.tie / 2]))
    assert p_first == pytest.approx(0.52, abs=1e-12)
    differ = dlen != 0
    zero = np.zeros(differ.sum())
    c, s = a.probabilities(zero, dlen[differ]), a.probabilities(zero, -dlen[differ])
    longer_first = dlen[differ] > 0
    p_longer = np.concatenate([np.where(longer_first, c.first, c.second),
                               np.where(longer_first, s.second, s.first)]).mean()
    assert p_longer == pytest.approx(0.64, abs=1e-12)
    with pytest.raises(InvalidArgumentError, match="longer=0.99 cannot be reached"):
        Annotator.calibrated(first=0.9, longer=0.99)
    with pytest.raises(InvalidArgumentError, match=r"first must be in \[0.5, 1\).*0.4"):
        Annotator.calibrated(first=0.4)


def test_pool_draws_annotators_by_weight_and_says_who_answered():
    pool = SimulatedAnnotators([Annotator(0.0), Annotator(0.0, position_rate=0.9)],
                               weights=[3, 1]).bind(context(REWARDS))
    n = 20_000
    first, _, labels = frequencies(pool, [("e e e e e", "d")], n)
    who = labels.info["annotator"]
    assert who.dtype == np.int64 and set(np.unique(who)) == {0, 1}
    assert abs((who == 1).mean() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)
    chose_first = labels.preference.astype(bool)
    assert not chose_first[who == 0].any()  # the argmax annotator never picks the worse
    assert abs(chose_first[who == 1].mean() - 0.9) < 0.03  # the other mostly picks the first
    c = pool.choice_probabilities(["p"], ["e e e e e"], ["d"])
    assert c.first[0] == pytest.approx(0.25 * 0.9)
    assert abs(first[0] - c.first[0]) < 5 * math.sqrt(0.225 * 0.775 / n)


def test_pool_calls_the_reward_once_per_batch():
    calls = []

    def reward(prompts, responses):
        calls.append(len(responses))
        return np.zeros(len(responses))

    oracle = make_oracle("alpacafarm").bind(OracleContext(reward))
    oracle.label(["p"] * 7, ["a"] * 7, ["b"] * 7, np.random.default_rng(0))
    assert calls == [14]


# ---- label flips --------------------------------------------------------------------------------

def test_label_flips_are_the_alpacaeval_mixture():
    base = SimulatedAnnotators(Annotator(1.0, tie_margin=0.5))
    flips = LabelFlips(base, 0.2).bind(context(REWARDS))
    pairs = [("a", "d"), ("d", "e e e e e"), ("a", "c c c")]  # dr -1, 3, -0.05 (a tie)
    b = base.bind(context(REWARDS)).choice_probabilities(["p"] * 3, *zip(*pairs))
    c = flips.choice_probabilities(["p"] * 3, *zip(*pairs))
    np.testing.assert_allclose(c.first, 0.6 * b.first + 0.2)
    np.testing.assert_allclose(c.tie, 0.6 * b.tie)
    n = 20_000
    first, tie, _ = frequencies(flips, pairs, n)
    for got, p in ((first, c.first), (tie, c.tie)):
        assert np.all(np.abs(got - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)
    # argmax + flips: a strict label is wrong with probability exactly p
    coste = make_oracle("coste-flip25").bind(context(REWARDS))
    first, _, _ = frequencies(coste, [("d", "a")], n)
    assert abs(first[0] - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)


def test_no_flips_keep_the_base_labels_and_flips_keep_its_info():
    values = {"a": 0.0, "b": 0.4}
    base = make_oracle("alpacafarm").oracle
    kept = LabelFlips(base, 0.0).bind(context(values))
    plain = base.bind(context(values))
    x = kept.label(["p"] * 500, ["a"] * 500, ["b"] * 500, np.random.default_rng(3))
    y = plain.label(["p"] * 500, ["a"] * 500, ["b"] * 500, np.random.default_rng(3))
    np.testing.assert_array_equal(x.preference, y.preference)
    np.testing.assert_array_equal(x.info["annotator"], y.info["annotator"])


# ---- presets ---------------------------------------------------------------------------------

def test_the_required_presets_exist_with_their_sources_and_targets():
    assert set(REQUIRED) <= set(list_presets())
    for name in list_presets():
        doc = PRESETS[name].__doc__ or ""
        assert "Targets:" in doc and "fixed" in doc, name
        assert PRESET_INFO[name].source and PRESET_INFO[name].nominal, name
    assert PRESET_INFO["human-like"].nominal == {"first_chosen": 0.52, "longer_chosen": 0.64,
                                                 "tie_rate": 0.0}
    assert "2310.02743" in PRESETS["coste-flip25"].__doc__
    assert "2210.10760" in PRESETS["gao-argmax"].__doc__
    assert "2305.14387" in PRESETS["alpacafarm"].__doc__
    assert "0.64" in PRESETS["human-like"].__doc__ and "0.52" in PRESETS["human-like"].__doc__
    af = make_oracle("alpacafarm")
    assert isinstance(af, LabelFlips) and af.p == 0.25 and len(af.oracle.pool) == 13


def test_bt_preset_reproduces_todays_labels_exactly():
    values = {f"r{i}": v for i, v in enumerate(np.random.default_rng(0).normal(size=12))}
    names = list(values)
    idx = np.random.default_rng(1).integers(len(names), size=(3000, 2))
    x1, x2 = [names[i] for i in idx[:, 0]], [names[j] for j in idx[:, 1]]
    for preset, today in (("bt", BradleyTerry()),
                          ("gao-argmax", BradleyTerry(deterministic=True))):
        ours = make_oracle(preset).bind(context(values))
        ref = today.bind(context(values))
        rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
        for _ in range(3):
            a = ours.label(["p"] * 3000, x1, x2, rng_a)
            b = ref.label(["p"] * 3000, x1, x2, rng_b)
            np.testing.assert_array_equal(a.preference, b.preference)
            np.testing.assert_array_equal(a.chosen, b.chosen)
            assert a.info == b.info == {}
        assert rng_a.random() == rng_b.random()  # the env's stream is consumed identically
    assert make_oracle(None).config() == {"name": "bt", "temperature": 1.0,
                                          "deterministic": False}


def test_default_env_is_unchanged_by_the_bt_preset():
    a = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=3)
    b = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=3, oracle=BradleyTerry())
    assert a.unwrapped.offline_dataset.to_dict() == b.unwrapped.offline_dataset.to_dict()
    a.reset(seed=5)
    b.reset(seed=5)
    for i in range(20):
        action = (f"response-{i % 7}", f"response-{(3 * i + 1) % 7}")
        ra, rb = a.step(action), b.step(action)
        assert ra[1] == rb[1] and ra[4] == rb[4]
        a.reset()
        b.reset()


# ---- the env seam: info, ties, ledger, offline data, evaluation ------------------------------

def test_the_step_says_who_answered_and_whether_it_was_a_tie():
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=50, oracle="alpacafarm")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(("response-1", "response-2"))
    assert 0 <= info["annotator"] < 13 and info["tie"] is False and reward in (0.0, 1.0)
    assert info["queries_used"] == 1
    always_tie = SimulatedAnnotators(Annotator(tie_margin=1e9))
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=5, oracle=always_tie)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(("response-1", "response-2"))
    assert info["tie"] is True and reward == 0.5 and info["annotator"] == 0
    venv = rlhf_env.make_vec("LinearBT-v0", 4, setting="online", query_budget=8,
                             oracle="alpacafarm")
    venv.reset(seed=0)
    _, rewards, _, _, vinfo = venv.step((["response-0"] * 4, ["response-5"] * 4))
    final = vinfo["final_info"]
    assert final["annotator"].shape == (4,) and final["tie"].shape == (4,)
    assert instance_of(venv).queries_used == 4


def test_offline_data_are_labelled_by_the_training_oracle_and_drop_ties():
    ties = SimulatedAnnotators(Annotator(position_rate=0.5, tie_margin=1e9))
    env = rlhf_env.make("LinearBT-v0", setting="hybrid", n_offline=200, oracle=ties)
    data = env.unwrapped.offline_dataset
    # half the labels come from the position habit (strict); the rest are ties, dropped
    assert 60 < len(data) < 140
    noisy = rlhf_env.make("LinearBT-v0", setting="hybrid", n_offline=200, oracle="alpacafarm")
    clean = rlhf_env.make("LinearBT-v0", setting="hybrid", n_offline=200)
    assert noisy.unwrapped.offline_dataset["chosen"] != clean.unwrapped.offline_dataset["chosen"]


def test_the_training_oracle_never_touches_evaluation():
    """Two envs differing only in the training oracle evaluate a policy identically."""
    envs = {name: rlhf_env.make("LinearBT-v0", setting="hybrid", seed=2, oracle=name)
            for name in REQUIRED}
    policy = envs["bt"].unwrapped.reference
    reference = rlhf_env.evaluate(policy, envs["bt"])
    for name, env in envs.items():
        assert rlhf_env.evaluate(policy, env) == reference, name
    assert (envs["alpacafarm"].unwrapped.offline_dataset["chosen"]
            != envs["bt"].unwrapped.offline_dataset["chosen"])  # the oracles did differ


def test_report_charges_nothing_and_takes_an_env_id():
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=3)
    r = rlhf_env.oracles.report(env, "coste-flip25", n_draws=20)
    assert env.unwrapped.queries_used == 0 and r.ok
    assert r.statistics["gold_agreement"].target == pytest.approx(0.75)
    r = rlhf_env.oracles.report("LinearBT-v0", None, n_draws=20, n_prompts=4,
                                env_kwargs={"seed": 1})
    assert r.oracle == {"name": "bt", "temperature": 1.0, "deterministic": False}
    assert r.preset is None and r.statistics["longer_chosen"].n_labels == 0


# ---- bad input ---------------------------------------------------------------------------------

def test_unknown_preset_lists_the_presets():
    with pytest.raises(InvalidArgumentError) as e:
        rlhf_env.make("LinearBT-v0", oracle="alpaca-farm")
    msg = str(e.value)
    assert "'alpaca-farm'" in msg and "Did you mean 'alpacafarm'" in msg
    for name in REQUIRED:
        assert name in msg


@pytest.mark.parametrize("p", [-0.1, 0.51, 1.0, float("nan"), float("inf"), "0.25", True])
def test_flip_probability_outside_0_to_half(p):
    with pytest.raises(InvalidArgumentError, match=r"p .*got"):
        LabelFlips(BradleyTerry(), p)


def test_flip_probability_names_the_value():
    with pytest.raises(InvalidArgumentError, match=r"p must be in \[0, 0.5\].*got 0.7"):
        LabelFlips(BradleyTerry(), 0.7)
    with pytest.raises(InvalidArgumentError, match="wraps an rlhf_env.oracles.Oracle"):
        LabelFlips("bt", 0.1)


@pytest.mark.parametrize("pool", [[], ()])
def test_empty_pool(pool):
    with pytest.raises(InvalidArgumentError, match="pool is empty .size 0."):
        SimulatedAnnotators(pool)


@pytest.mark.parametrize("t", [-0.5, -1e-9, float("nan"), float("-inf"), "1"])
def test_negative_or_non_finite_temperature(t):
    with pytest.raises(InvalidArgumentError, match=r"temperature must be .*got"):
        Annotator(temperature=t)
    with pytest.raises(InvalidArgumentError, match=r"temperature .*got -0.5"):
        Annotator(temperature=-0.5)


@pytest.mark.parametrize("field", ["position_logit", "length_logit", "tie_margin",
                                   "position_rate", "length_rate"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_biases(field, bad):
    with pytest.raises(InvalidArgumentError, match=rf"{field} must be a finite number, got "
                                                   rf"{bad!r}"):
        Annotator(**{field: bad})


@pytest.mark.parametrize("kwargs, match", [
    ({"position_rate": 1.0}, r"position_rate must be in \[0, 1\), got 1.0"),
    ({"length_rate": -0.1}, r"length_rate must be in \[0, 1\), got -0.1"),
    ({"tie_margin": -1.0}, "tie_margin must be >= 0, got -1.0"),
])
def test_out_of_range_parameters(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        Annotator(**kwargs)


def test_bad_pools_and_weights():
    with pytest.raises(InvalidArgumentError, match=r"pool\[1\] must be an rlhf_env.oracles"):
        SimulatedAnnotators([Annotator(), "bt"])
    with pytest.raises(InvalidArgumentError, match="weights has 1 entries for a pool of 2"):
        SimulatedAnnotators([Annotator(), Annotator()], weights=[1.0])
    with pytest.raises(InvalidArgumentError, match=r"weights\[0\] must be a finite number"):
        SimulatedAnnotators([Annotator(), Annotator()], weights=[float("nan"), 1.0])
    with pytest.raises(InvalidArgumentError, match="positive sum"):
        SimulatedAnnotators([Annotator(), Annotator()], weights=[0, 0])
    with pytest.raises(InvalidArgumentError, match="no reward function"):
        SimulatedAnnotators(Annotator()).label(["p"], ["a"], ["b"], np.random.default_rng(0))


def test_an_annotator_is_accepted_as_an_oracle():
    env = rlhf_env.make("LinearBT-v0", oracle=Annotator(0.5, position_logit=0.1))
    assert env.unwrapped.oracle_config["name"] == "annotators"
    assert env.unwrapped.oracle_config["pool"][0]["position_logit"] == 0.1


def test_sigmoid_limit_of_argmax_judgement():
    a = Annotator(0.0, length_logit=0.5)
    np.testing.assert_allclose(a.judgement(np.zeros(2), np.array([2.0, -2.0])),
                               sigmoid(np.array([1.0, -1.0])))


# ---- the command line ---------------------------------------------------------------------------

def test_oracle_report_command(capsys, tmp_path):
    from rlhf_env.__main__ import main

    out = tmp_path / "r.json"
    assert main(["oracle-report", "LinearBT-v0", "--oracle", "bt", "coste-flip25",
                 "--n-draws", "20", "--env-kwargs", "n_prompts=8", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Oracle report: coste-flip25 on LinearBT-v0" in text and text.count("| tie rate |") == 2
    assert "Coste et al. 2024" in text and out.is_file()
    assert main(["oracle-report", "LinearBT-v0", "--oracle", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown oracle preset 'nope'" in err and "human-like" in err


def test_help_lists_every_command_with_one_line(capsys):
    from rlhf_env.__main__ import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("table", "list", "oracle-report"):
        assert re.search(rf"^  {command} +\S", out, re.M), out  # listed, with its help
    assert set(COMMANDS) == {"table", "list", "oracle-report"}


def test_the_table_command_keeps_its_old_flags(capsys):
    from rlhf_env.__main__ import main

    assert main(["--list"]) == 0 and "TinyInstruct-v0" in capsys.readouterr().out
    assert main(["list"]) == 0 and "LinearBT-v0" in capsys.readouterr().out
    assert main(["--env", "LinearBT-v0", "--seed", "1"]) == 0
    old = capsys.readouterr().out
    assert main(["table", "--seed", "1"]) == 0
    assert capsys.readouterr().out == old and "pi* (Gibbs optimum)" in old
