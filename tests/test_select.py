"""Returning the best iterate on held-out charged labels (agents/select.py)."""

from __future__ import annotations

import math

import pytest
import torch

import agents
import rlhf_env
from agents.checkpoint import Checkpointer
from agents.data import PreferenceData
from agents.select import IterateSelector, held_out_log_likelihood
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.policies import Catalog, TabularPolicy


def _pair_policies():
    cat = Catalog(["x"], ["a", "b"])
    ref = TabularPolicy(cat, torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64)))
    pi = TabularPolicy(cat, torch.log(torch.tensor([[0.8, 0.2]], dtype=torch.float64)))
    return ref, pi


def test_the_held_out_likelihood_by_hand():
    """pi = (0.8, 0.2), pi0 = (0.5, 0.5), scale 1: r(a) - r(b) = log 4, so a label 'a beats
    b' has log sigma(log 4) = log 0.8; a soft label P(a > b) = 0.75 has
    0.75 log 0.8 + 0.25 log 0.2; scale 2 doubles the margin: log(16/17)."""
    ref, pi = _pair_policies()
    hard = PreferenceData(["x"], ["a"], ["b"])
    assert held_out_log_likelihood(pi, ref, hard, 1.0) == pytest.approx(math.log(0.8))
    assert held_out_log_likelihood(pi, ref, hard, 2.0) == pytest.approx(math.log(16 / 17))
    soft = PreferenceData(["x"], ["a"], ["b"], [0.75])
    assert held_out_log_likelihood(pi, ref, soft, 1.0) == pytest.approx(
        0.75 * math.log(0.8) + 0.25 * math.log(0.2))
    # pi0 itself: margin 0, log 1/2 whatever the label
    assert held_out_log_likelihood(ref, ref, hard, 1.0) == pytest.approx(math.log(0.5))


def test_the_split_is_seeded_disjoint_and_the_incumbent_is_kept_unless_beaten():
    ref, pi = _pair_policies()
    new = PreferenceData(["x"] * 20, ["a"] * 20, ["b"] * 20)
    new.prompts = [f"x{i}" for i in range(20)]  # distinct pairs, to check disjointness
    s1, s2 = (IterateSelector(ref, fraction=0.25, scale=1.0, seed=3) for _ in range(2))
    (train1, held1), (_, held2) = s1.split(0, new), s2.split(0, new)
    assert len(held1) == 5 and len(train1) == 15
    assert held1.prompts == held2.prompts and not set(held1.prompts) & set(train1.prompts)
    assert s1.split(1, new)[1].prompts != held1.prompts  # another round, another draw

    sel = IterateSelector(ref, fraction=0.5, scale=1.0, seed=0)
    sel.split(0, PreferenceData(["x"] * 4, ["a"] * 4, ["b"] * 4))  # labels say a > b
    assert sel.update(0, pi) == (pytest.approx(math.log(0.8)), True)
    worse = TabularPolicy(pi.catalog, torch.log(torch.tensor([[0.3, 0.7]], dtype=torch.float64)))
    score, chosen = sel.update(1, worse)
    assert score < math.log(0.8) and not chosen and sel.best_round == 0


def test_an_agent_returns_its_selected_round_and_never_trains_on_held_pairs(tmp_path):
    env = rlhf_env.make("LinearBT-v0", seed=101, setting="online", query_budget=256)
    agent = agents.make("online_dpo", env, select_iterate="holdout", holdout_fraction=0.25,
                        checkpoint_dir=str(tmp_path / "ckpt"))
    history = []
    agent.learn(callback=lambda a, info: history.append(a.policy.copy(frozen=True)))
    sel = agent._selector  # noqa: SLF001 - the test inspects the loop's selector
    assert env.unwrapped.queries_used == 256
    assert len(agent.data) + len(sel.held) == 256 and len(sel.held) == 64
    assert 0 <= sel.best_round <= len(history)
    best = history[min(sel.best_round, len(history) - 1)]  # len(history): after finish()
    torch.testing.assert_close(agent.policy.log_probs_table(), best.log_probs_table())
    # the incumbent is on disk for a resume
    assert (tmp_path / "ckpt" / "selected" / "policy").is_dir()


def test_bad_selection_settings_are_refused():
    env = rlhf_env.make("LinearBT-v0", seed=0, setting="online", query_budget=64)
    with pytest.raises(InvalidArgumentError, match="select_iterate"):
        agents.make("online_dpo", env, select_iterate="best")
    with pytest.raises(InvalidArgumentError, match="holdout_fraction"):
        agents.make("online_dpo", env, select_iterate="holdout", holdout_fraction=1.0)
    with pytest.raises(InvalidArgumentError, match="xpo_alpha"):
        agents.make("xpo", env, select_iterate="holdout")


def test_a_resume_refills_the_held_out_pairs_and_restores_the_incumbent(tmp_path):
    env = rlhf_env.make("LinearBT-v0", seed=102, setting="online", query_budget=256)
    ck = str(tmp_path / "ckpt")
    first = agents.make("online_dpo", env, select_iterate="holdout", checkpoint_dir=ck)
    first.learn(callback=lambda a, info: info["iteration"] < 2)  # stop after round 3
    sel = first._selector  # noqa: SLF001
    fresh = rlhf_env.make("LinearBT-v0", seed=102, setting="online", query_budget=256)
    again = agents.make("online_dpo", fresh, select_iterate="holdout")
    start = again._restore(Checkpointer(ck))  # noqa: SLF001
    assert start == 3
    resel = again._selector  # noqa: SLF001
    assert resel.held.prompts == sel.held.prompts and len(again.data) == len(first.data)
    assert resel.best_round == min(sel.best_round, 2)
    assert resel.best is not None
