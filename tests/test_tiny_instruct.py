import numpy as np
import pytest

import rlhf_env
from rlhf_env.envs import tiny_instruct
from rlhf_env.envs import tiny_tasks as T


@pytest.mark.parametrize(
    "prompt, response, reward",
    [
        ("sort d b a =", " a b d", 4.0),
        ("sort d b a =", " a b d ok", 4.0),                  # one filler is free
        ("sort d b a =", " a b d ok ok", 3.0),               # each further filler costs 1
        ("sort d b a =", " a d b", 4 * (0.7 / 3 + 0.3)),     # 1 of 3 positions, all 3 items
        ("sort d b a =", " a b", 4 * (0.7 * 2 / 3 + 0.3 * 2 / 3)),  # over max(2, 3)
        ("sort d b a =", " a b d d", 4 * (0.7 * 3 / 4 + 0.3 * 3 / 4)),  # over max(4, 3)
        ("sort d b a =", " c c c", 0.0),
        ("rev d b a =", " a b d", 4.0),
        ("max 3 7 2 =", " 7", 4.0),
        ("max 3 7 2 =", " 6", 3.0),                         # 1 - 1/4
        ("max 3 7 2 =", " 2", 0.0),                         # off by 5
        ("max 3 7 2 =", " 7 7", 0.0),                       # one integer, please
        ("count b : a b b c =", " 2", 4.0),
        ("count b : a b b c =", " 4 ok ok ok", 2.0 - 2.0),
        ("count b : a b b c =", "", 0.0),
    ],
)
def test_gold_reward_hand_worked(prompt, response, reward):
    assert tiny_instruct._gold_reward(prompt, response) == pytest.approx(reward)


def test_demonstrations_are_mixed_quality_and_fillers_correlate_with_correctness():
    rng = np.random.default_rng(0)
    prompts = [T.make_prompt(rng) for _ in range(3000)]
    demos = [T.demonstration(p, rng) for p in prompts]
    correct = np.array([d.split()[: len(T.answer(p))] == T.answer(p) and
                        len([w for w in d.split() if w != "ok"]) == len(T.answer(p))
                        for p, d in zip(prompts, demos)])
    filler = np.array(["ok" in d.split() for d in demos])
    assert 0.3 < correct.mean() < 0.5
    assert filler[correct].mean() > 0.5 > 0.15 > filler[~correct].mean()


def test_tiny_instruct_env(tiny_env):
    u = tiny_env.unwrapped
    assert set(u.train_prompts).isdisjoint(u.eval_prompts)
    ds = u.offline_dataset
    assert ds.column_names == ["prompt", "chosen", "rejected"] and 0 < len(ds) <= 32
    assert all(c != r for c, r in zip(ds["chosen"], ds["rejected"]))
    assert set(ds["prompt"]) <= set(u.train_prompts)
    obs, info = tiny_env.reset(seed=0)
    a1, a2 = u.reference.sample([obs["prompt"]], n=2)[0]
    _, r, term, _, info = tiny_env.step((a1, a2))
    assert term and info["queries_used"] == 1 and r in (0.0, 1.0)


def test_same_seed_same_offline_data():
    kw = {"size": "small", "n_train_prompts": 32, "n_eval_prompts": 8, "n_offline": 16}
    a = rlhf_env.make("TinyInstruct-v0", seed=1, **kw).unwrapped.offline_dataset
    b = rlhf_env.make("TinyInstruct-v0", seed=1, **kw).unwrapped.offline_dataset
    c = rlhf_env.make("TinyInstruct-v0", seed=2, **kw).unwrapped.offline_dataset
    assert a.to_dict() == b.to_dict() != c.to_dict()


def test_sampled_evaluation_of_reference(tiny_env):
    u = tiny_env.unwrapped
    used = u.queries_used
    m = rlhf_env.evaluate(u.reference, tiny_env, n_samples=8, seed=0)
    assert m["kl"] == pytest.approx(0.0, abs=1e-6)
    assert m["objective"] == pytest.approx(m["gold_reward"], abs=1e-6)
    assert abs(m["win_rate"] - 0.5) < 4 * m["win_rate_stderr"] + 0.02
    for key in ("gold_reward", "kl", "objective", "win_rate", "mean_length"):
        assert f"{key}_stderr" in m and np.isfinite(m[key])
    assert m["best_of_16/gold_reward"] > m["best_of_1/gold_reward"]
    assert m["best_of_16/kl"] == pytest.approx(np.log(16) - 15 / 16)
    assert m == rlhf_env.evaluate(u.reference, tiny_env, n_samples=8, seed=0)  # seeded
    assert u.queries_used == used  # evaluation spends no queries


def test_bad_kwargs():
    with pytest.raises(rlhf_env.InvalidArgumentError, match="size must be one of"):
        rlhf_env.make("TinyInstruct-v0", size="huge")
    with pytest.raises(rlhf_env.InvalidKwargError, match="n_prompt"):
        rlhf_env.make("TinyInstruct-v0", n_prompt=3)
