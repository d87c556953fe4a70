import numpy as np
import pytest

import rlhf_env
from rlhf_env.errors import InvalidActionError, InvalidArgumentError, QueryBudgetExceeded


def rollout(env, seed, n=20):
    out = []
    obs, info = env.reset(seed=seed)
    responses = env.unwrapped.catalog.responses
    for t in range(n):
        a = (responses[t % len(responses)], responses[(3 * t + 1) % len(responses)])
        _, r, term, trunc, info = env.step(a)
        assert term and not trunc
        out.append((obs["prompt"], a, r, info["preference"], info["chosen"]))
        obs, info = env.reset()
    return out


def test_same_seed_same_rollout_and_data_different_seed_differs():
    a, b, c = (rlhf_env.make("LinearBT-v0", seed=s) for s in (0, 0, 1))
    assert rollout(a, 5) == rollout(b, 5)
    assert rollout(a, 5) != rollout(a, 6)
    da, db, dc = (e.unwrapped.offline_dataset for e in (a, b, c))
    assert da.to_dict() == db.to_dict()
    assert da.to_dict() != dc.to_dict()
    assert not np.allclose(a.unwrapped.features, c.unwrapped.features)
    # make(seed=s) also seeds the first unseeded reset
    x, y = rlhf_env.make("LinearBT-v0", seed=3), rlhf_env.make("LinearBT-v0", seed=3)
    assert x.reset()[0] == y.reset()[0]


def test_vector_env_matches_single_env_and_shares_ledger():
    single = rlhf_env.make("LinearBT-v0", seed=0)
    venv = single.unwrapped.make_vec(8)
    resp = single.unwrapped.catalog.responses
    a1 = [resp[i % 5] for i in range(8)]
    a2 = [resp[(i + 7) % 11] for i in range(8)]

    obs, _ = single.reset(seed=42)
    singles = []
    for i in range(8):
        _, _, _, _, info = single.step((a1[i], a2[i]))
        singles.append((obs["prompt"], info["preference"]))
        obs, _ = single.reset()
    assert single.unwrapped.queries_used == 8

    vobs, _ = venv.reset(seed=42)
    _, rew, term, trunc, info = venv.step((a1, a2))
    fi = info["final_info"]
    assert list(zip(vobs["prompt"], fi["preference"].tolist())) == singles
    assert rew.tolist() == [float(p) for _, p in singles]
    assert term.all() and not trunc.any()
    # one ledger for every view of the instance
    assert single.unwrapped.queries_used == 16 == venv.queries_used
    assert fi["queries_used"][0] == 16
    # same-step autoreset: the returned observation is the next batch of prompts
    assert [o["prompt"] for o in info["final_obs"]] == list(vobs["prompt"])
    assert venv.metadata["autoreset_mode"].value == "SameStep"


def test_make_vec_and_vector_obs_in_space():
    venv = rlhf_env.make_vec("LinearBT-v0", 4, setting="online", query_budget=8)
    obs, info = venv.reset(seed=0)
    assert obs in venv.observation_space
    actions = venv.action_space.sample()
    obs, *_ = venv.step(actions)
    assert obs in venv.observation_space
    venv.step(actions)
    with pytest.raises(QueryBudgetExceeded, match="8 of 8"):
        venv.step(actions)


def test_budget_exceeded_counts_nothing_and_env_stays_usable():
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=3, seed=0)
    u = env.unwrapped
    pair = ("response-0", "response-1")
    for _ in range(3):
        env.reset()
        env.step(pair)
    env.reset()
    with pytest.raises(QueryBudgetExceeded, match="3 of 3 queries used"):
        env.step(pair)
    assert u.queries_used == 3 and u.queries_left == 0
    venv = u.make_vec(2)
    venv.reset()
    with pytest.raises(QueryBudgetExceeded):
        venv.step((["response-0"] * 2, ["response-1"] * 2))
    assert u.queries_used == 3
    # a vector step larger than what is left is refused whole, not partly paid
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=5)
    venv = env.unwrapped.make_vec(4)
    venv.reset(seed=0)
    venv.step((["response-0"] * 4, ["response-1"] * 4))
    with pytest.raises(QueryBudgetExceeded, match="4 of 5"):
        venv.step((["response-0"] * 4, ["response-1"] * 4))
    assert env.unwrapped.queries_used == 4


@pytest.mark.parametrize(
    "action, match",
    [
        ("response-0", "pair"),
        (("response-0",), "pair"),
        ((), "pair"),
        (("response-0", 3), "must be a str"),
        (("response-0", "nope"), "'nope' is not one of the 16 candidate"),
        (42, "pair"),
    ],
)
def test_bad_actions_raise_and_lose_nothing(action, match):
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=10)
    env.unwrapped.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.unwrapped.step(action)
    assert env.unwrapped.queries_used == 0
    _, _, _, _, info = env.unwrapped.step(("response-0", "response-1"))  # still usable
    assert info["queries_used"] == 1


def test_bad_vector_actions():
    venv = rlhf_env.make_vec("LinearBT-v0", 2, setting="online", query_budget=10)
    venv.reset(seed=0)
    with pytest.raises(InvalidActionError, match="hold 2 responses"):
        venv.step((["response-0"], ["response-1"]))
    with pytest.raises(InvalidActionError, match="responses_1, responses_2"):
        venv.step("response-0")
    assert venv.queries_used == 0


def test_reward_feedback():
    env = rlhf_env.make("LinearBT-v0", feedback="reward", setting="online", query_budget=5)
    obs, info = env.reset(seed=0)
    _, r, term, _, info = env.step("response-3")
    assert r == pytest.approx(rlhf_env.judge(env).reward_table()[info["prompt_id"], 3])
    assert info["queries_used"] == 1 and term
    with pytest.raises(InvalidActionError, match="one response"):
        env.reset()
        env.step(("response-0", "response-1"))


def test_settings():
    off = rlhf_env.make("LinearBT-v0", setting="offline").unwrapped
    assert off.query_budget == 0 and len(off.offline_dataset) == 128
    assert off.offline_dataset.column_names == ["prompt", "chosen", "rejected"]
    on = rlhf_env.make("LinearBT-v0", setting="online", query_budget=64).unwrapped
    assert on.offline_dataset is None and on.query_budget == 64
    hy = rlhf_env.make("LinearBT-v0", setting="hybrid", n_offline=10).unwrapped
    assert len(hy.offline_dataset) == 10 and hy.query_budget == 1024
    with pytest.raises(InvalidArgumentError, match="setting='offline' has no oracle queries"):
        rlhf_env.make("LinearBT-v0", setting="offline", query_budget=5)
    with pytest.raises(InvalidArgumentError, match="setting must be one of"):
        rlhf_env.make("LinearBT-v0", setting="batch")
    off_env = rlhf_env.make("LinearBT-v0", setting="offline")
    off_env.reset(seed=0)
    with pytest.raises(QueryBudgetExceeded, match="0 of 0"):
        off_env.step(("response-0", "response-1"))


@pytest.mark.parametrize("seed", ["0", 1.5, -1, True])
def test_seed_of_wrong_type(seed):
    with pytest.raises(InvalidArgumentError, match="seed"):
        rlhf_env.make("LinearBT-v0", seed=seed)
    env = rlhf_env.make("LinearBT-v0")
    with pytest.raises(InvalidArgumentError, match="seed"):
        env.unwrapped.reset(seed=seed)


def test_public_parts_and_offline_pairs_are_candidates():
    u = rlhf_env.make("LinearBT-v0").unwrapped
    assert u.eta == 1.0 and u.features.shape == (32, 16, 16)
    assert np.allclose(np.linalg.norm(u.features, axis=-1), 1.0)
    assert np.linalg.norm(rlhf_env.judge(env := rlhf_env.make("LinearBT-v0")).theta_star) == \
        pytest.approx(6.0)
    assert not env.unwrapped.features.flags.writeable
    ds = u.offline_dataset
    assert set(ds["chosen"]) | set(ds["rejected"]) <= set(u.catalog.responses)
    assert all(c != r for c, r in zip(ds["chosen"], ds["rejected"]))
    # pi0 is non-uniform and not the optimum
    ref = u.reference.probs_table().detach().numpy()
    assert ref.max() > 2.0 / 16


def test_narrow_behaviour_rarely_plays_what_pi_star_plays():
    j = rlhf_env.judge(rlhf_env.make("LinearBT-Narrow-v0"))
    pi_star = j.optimal_policy().probs_table().detach().numpy()
    mass_narrow = (j.behaviour_probs() * pi_star).sum(1).mean()
    mass_ref = (j.behaviour_probs("reference") * pi_star).sum(1).mean()
    assert mass_narrow < 0.5 * mass_ref
