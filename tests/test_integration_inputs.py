"""Bad input to the integration adapters (oat's EnvOracle, TRL's reward functions) is refused
with the package's own errors before anything is built or charged, and a good call is charged
once, whole (issue 31, items 3 and 6). Every refusal asserts that the ledger spent nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import rlhf_env
from rlhf_env.errors import InvalidArgumentError, QueryBudgetExceeded
from rlhf_env.integrations.oat import EnvOracle
from rlhf_env.integrations.trl import pairwise_reward_function, reward_function

SMALL = {"size": "small", "n_train_prompts": 16, "n_eval_prompts": 4, "n_offline": 0,
         "setting": "online"}


def _linear(budget: int = 10) -> Any:
    return rlhf_env.make("LinearBT-v0", setting="online", query_budget=budget)


def _tiny(**kw: Any) -> Any:
    return rlhf_env.make("TinyInstruct-v0", **{**SMALL, "query_budget": 12, **kw})


def _refused(env: Any, call: Callable[[], Any]) -> InvalidArgumentError:
    """Run ``call``; it must raise InvalidArgumentError and charge nothing."""
    ledger = env.unwrapped.instance.ledger
    before = ledger.used
    with pytest.raises(InvalidArgumentError) as e:
        call()
    assert ledger.used == before, "a refused call charged the ledger"
    return e.value


# -- oat: EnvOracle(...) ---------------------------------------------------------------------
ORACLE_SEEDS = {"seed a str": "a", "seed negative": -1, "seed a float": 2.7, "seed a bool": True,
                "seed None": None}


@pytest.mark.parametrize("case", list(ORACLE_SEEDS))
def test_env_oracle_refuses_a_bad_seed(case):
    env = _linear()
    err = _refused(env, lambda: EnvOracle(env, seed=ORACLE_SEEDS[case]))
    assert "seed" in str(err) and repr(ORACLE_SEEDS[case]) in str(err)


# -- oat: compare(...) -----------------------------------------------------------------------
def _compare_cases(p: list[str]) -> dict[str, tuple[tuple, dict]]:
    r0, r1 = "response-0", "response-1"
    return {
        "an input that is None": (([None], [r0], [r1]), {}),
        "a generator of inputs": (((x for x in p[:2]), [r0] * 2, [r1] * 2), {}),
        "a generator of candidates": ((p[:2], (r for r in [r0, r0]), [r1] * 2), {}),
        "one str instead of a list": ((p[0], r0, r1), {}),
        "an input that is not a train prompt": ((["no such prompt"], [r0], [r1]), {}),
        "a candidate that is None": ((p[:2], [r0, None], [r1] * 2), {}),
        "a candidate not in the catalogue": ((p[:2], [r0] * 2, [r1, "response-999"]), {}),
        "a candidate that is an int": ((p[:1], [0], [r1]), {}),
        "lengths that differ": ((p[:3], [r0] * 3, [r1] * 2), {}),
        "batch_size 0": ((p[:2], [r0] * 2, [r1] * 2), {"batch_size": 0}),
        "batch_size a bool": ((p[:2], [r0] * 2, [r1] * 2), {"batch_size": True}),
        "batch_size a str": ((p[:2], [r0] * 2, [r1] * 2), {"batch_size": "4"}),
        "return_probs a str": ((p[:2], [r0] * 2, [r1] * 2), {"return_probs": "yes"}),
    }


COMPARE_CASES = list(_compare_cases(["p"] * 3))


@pytest.mark.parametrize("case", COMPARE_CASES)
def test_compare_refuses_bad_input_before_charging(case):
    env = _linear()
    args, kwargs = _compare_cases(list(env.unwrapped.instance.train_prompts[:3]))[case]
    _refused(env, lambda: EnvOracle(env).compare(*args, **kwargs))


LAST_BAD = {"an input that is None": (None, "response-1"),
            "an input that is not a train prompt": ("no such prompt", "response-1"),
            "a candidate not in the catalogue": ("train", "response-999")}


@pytest.mark.parametrize("case", list(LAST_BAD))
def test_a_compare_whose_last_item_is_bad_charges_nothing(case):
    env = _linear(budget=10)
    inst = env.unwrapped.instance
    p = list(inst.train_prompts[:5])
    prompt, b = LAST_BAD[case]
    inputs = p[:4] + [p[4] if prompt == "train" else prompt]  # items 0-3 (two chunks) good
    oracle = EnvOracle(env)
    err = _refused(env, lambda: oracle.compare(inputs, ["response-0"] * 5,
                                               ["response-1"] * 4 + [b], batch_size=2))
    assert "[4]" in str(err)  # names the bad item
    assert inst.queries_used == 0
    wins, _ = oracle.compare(p, ["response-0"] * 5, ["response-1"] * 5, batch_size=2)
    assert len(wins) == 5 and inst.queries_used == 5  # the budget is intact


def test_a_good_multi_chunk_compare_charges_once_and_returns_every_pair(monkeypatch):
    env = _linear(budget=10)
    inst = env.unwrapped.instance
    ledger = inst.ledger
    settles: list[int] = []
    settle = ledger.settle

    def counting(kind, prompts, *args, **kwargs):
        settles.append(len(prompts))
        return settle(kind, prompts, *args, **kwargs)

    monkeypatch.setattr(ledger, "settle", counting)
    p = list(inst.train_prompts[:7])
    wins, metric = EnvOracle(env).compare(p, ["response-0"] * 7, ["response-1"] * 7,
                                          batch_size=2)
    assert settles == [7]  # one charge of the whole call, not four chunks
    assert len(wins) == 7 and all(isinstance(w, bool) for w in wins)
    assert inst.queries_used == metric["oracle/queries"] == 7
    assert metric["oracle/queries_left"] == 3


def test_budget_spent_elsewhere_during_a_compare_charges_none_of_it():
    """Another thread holds 7 of 10 queries: a 5-pair compare in chunks of 2 used to pass the
    up-front check, pay two chunks, then fail saying nothing was counted."""
    env = _linear(budget=10)
    inst = env.unwrapped.instance
    p = list(inst.train_prompts[:5])
    with inst.ledger.charge(7):  # reserved by another caller, not yet answered
        with pytest.raises(QueryBudgetExceeded, match="Nothing was counted"):
            EnvOracle(env).compare(p, ["response-0"] * 5, ["response-1"] * 5, batch_size=2)
        assert inst.queries_used == 0
    assert inst.queries_used == 7  # the other caller's 7, none of the compare's


def test_compare_of_nothing_charges_nothing():
    env = _linear()
    wins, metric = EnvOracle(env).compare([], [], [])
    assert wins == [] and metric["oracle/queries"] == 0 and env.unwrapped.queries_used == 0


# -- TRL: the constructors -----------------------------------------------------------------------
TRL_CONSTRUCTORS = {  # case: (keywords, the bad value the error must name)
    "seed a str": (dict(seed="a"), "a"),
    "seed negative": (dict(seed=-1), -1),
    "seed a float": (dict(seed=2.7), 2.7),
    "seed a bool": (dict(seed=True), True),
    "group_size a str": (dict(mode="group", group_size="3"), "3"),
    "group_size a bool": (dict(mode="group", group_size=True), True),
    "group_size a float": (dict(mode="group", group_size=2.5), 2.5),
    "group_size negative": (dict(mode="group", group_size=-2), -2),
    "group_size 1": (dict(mode="group", group_size=1), 1),
    "mode unknown": (dict(mode="tournament"), "tournament"),
    "name not a str": (dict(name=3), 3),
}


@pytest.mark.parametrize("case", list(TRL_CONSTRUCTORS))
def test_pairwise_reward_function_refuses_bad_arguments(case):
    env = _tiny()
    kw, bad = TRL_CONSTRUCTORS[case]
    err = _refused(env, lambda: pairwise_reward_function(env, **kw))
    assert repr(bad) in str(err)  # names the bad value


def test_reward_function_refuses_a_bad_name():
    env = _tiny(feedback="reward")
    _refused(env, lambda: reward_function(env, name=["r"]))


# -- TRL: the calls ------------------------------------------------------------------------------
def _trl_cases(p: str, held_out: str) -> dict[str, tuple[dict, tuple, dict]]:
    return {
        "a prompt that is not the env's (pairs)": (dict(), (["p", "p"], ["a", "b"]), {}),
        "a prompt that is not the env's (group)":
            (dict(mode="group", group_size=2), (["p", "p"], ["a", "b"]), {}),
        "a held-out eval prompt": (dict(), ([held_out] * 2, ["a", "b"]), {}),
        "a chat prompt of another dialogue":
            (dict(), ([[{"role": "user", "content": "p"}]] * 2, ["a", "b"]), {}),
        "a generator of completions": (dict(), ([p, p], (c for c in ["a", "b"])), {}),
        "a generator of prompts": (dict(), ((x for x in [p, p]), ["a", "b"]), {}),
        "a completion that is None": (dict(), ([p, p], ["a", None]), {}),
        "a completion too long for the env": (dict(), ([p, p], ["a", "b" * 10_000]), {}),
        "an env_prompt that is None": (dict(), ([p, p], ["a", "b"]), {"env_prompt": [p, None]}),
        "an env_prompt that is not the env's":
            (dict(), ([p, p], ["a", "b"]), {"env_prompt": ["p", "p"]}),
        "an env_prompt of another length": (dict(), ([p, p], ["a", "b"]), {"env_prompt": [p]}),
        "num_generations a bool":
            (dict(mode="group"), ([p, p], ["a", "b"]), {"num_generations": True}),
        "num_generations a str":
            (dict(mode="group"), ([p, p], ["a", "b"]), {"num_generations": "2"}),
        "a bad last group": (dict(mode="group", group_size=2), ([p] * 4, ["a", "b", "c", 7]), {}),
    }


TRL_CALLS = list(_trl_cases("p", "q"))


@pytest.mark.parametrize("case", TRL_CALLS)
def test_pairwise_reward_function_refuses_bad_calls_before_paying(case):
    env = _tiny()
    inst = env.unwrapped.instance
    assert set(inst.eval_prompts).isdisjoint(inst.train_prompts)
    kw, args, extra = _trl_cases(inst.train_prompts[0], inst.eval_prompts[0])[case]
    f = pairwise_reward_function(env, **kw)
    _refused(env, lambda: f(*args, **extra))
    assert f.calls == f.queries == 0


def test_reward_function_refuses_a_prompt_that_is_not_the_envs():
    env = _tiny(feedback="reward")
    err = _refused(env, lambda: reward_function(env)(["p"], ["a"]))
    assert "'p'" in str(err) and "train prompts" in str(err)


def test_a_chat_prompt_of_one_user_turn_is_read_as_its_content():
    env = _tiny()
    p = env.unwrapped.instance.train_prompts[0]
    f = pairwise_reward_function(env)
    scores = f([[{"role": "user", "content": p}]] * 2, ["a", "b"])
    assert len(scores) == 2 and env.unwrapped.instance.queries_used == f.queries == 1
