"""Anchor rows for every leaderboard: pi0 itself, and best-of-n of pi0 under a fitted RM.

Also the one way an agent buys pairs of pi0 samples (:func:`query_reference_pairs`): the
offline learners' ``query_pairs`` (``mle_gibbs_pi0``, ``dpo_pi0``, ...) and best-of-n's
reward-model data, so "offline learning on N labelled pi0 pairs" means the same thing in
every agent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from agents.base import AgentConfig, check, register_agent
from agents.collect import check_budget
from agents.data import PreferenceData
from agents.loop import Agent
from agents.reward_models import RewardModelConfig, fit_reward_model
from rlhf_env.policies import FinitePolicy, Policy, best_of_n_policy

__all__ = ["ReferencePairs", "BestOfNConfig", "BestOfNAgent", "ReferenceAgent", "reference_pairs",
           "query_reference_pairs"]


def reference_pairs(reference: Policy, prompts: list[str], generator: torch.Generator
                    ) -> tuple[list[str], list[str]]:
    """Two samples of pi0 per prompt: ``(responses_1, responses_2)``.

    On a finite policy the second is drawn from pi0 conditioned on differing from the first
    (a2 ~ pi0(. | x, a2 != a1), as the envs' offline pairs are drawn), so no label is paid
    for a pair that carries no preference; a prompt where pi0 is a point mass gets the same
    response twice. Elsewhere (language models) two independent samples.
    """
    if not isinstance(reference, FinitePolicy):
        pairs = reference.sample(prompts, n=2, generator=generator)
        return [p[0] for p in pairs], [p[1] for p in pairs]
    pid = torch.as_tensor(reference.catalog.prompt_ids(prompts))
    with torch.no_grad():
        probs = reference.probs_table().detach().double()[pid]  # (n, K)
    first = torch.multinomial(probs, 1, generator=generator)  # (n, 1)
    rest = probs.scatter(1, first, 0.0)
    point = rest.sum(1) <= 0  # pi0 puts all its mass on the first
    rest[point] = probs[point]
    second = torch.multinomial(rest, 1, generator=generator)
    names = reference.catalog.responses
    return [names[j] for j in first[:, 0].tolist()], [names[j] for j in second[:, 0].tolist()]


class ReferencePairs:
    """The ``query_pairs`` setting of offline learners, shared by their configs: pairs of pi0
    samples to label through the env before fitting (0: none, the offline data only; None:
    the whole query budget), and the checks that go with it. A config class lists it first
    among its bases and declares the ``query_pairs`` field itself (its default differs)."""

    query_pairs: int | None

    def check(self) -> None:
        super().check()  # type: ignore[misc]  # the config base that follows in the MRO
        check(self.query_pairs is None or self.query_pairs >= 0,
              f"query_pairs must be >= 0 (or None for the whole budget), got {self.query_pairs!r}")

    def pairs_to_query(self, instance: Any) -> int:
        return instance.query_budget if self.query_pairs is None else self.query_pairs

    def check_data(self, instance: Any, who: str, message: str) -> None:
        """The budget covers the pairs to query, and there is some data to learn from."""
        q = self.pairs_to_query(instance)
        if q:
            check_budget(who, 1, q, instance)
        ds = instance.offline_dataset
        check(q > 0 or (ds is not None and len(ds) > 0), message)


def query_reference_pairs(agent: Agent, n: int) -> PreferenceData | None:
    """Pay (through ``agent.collector``) for ``n`` labelled pairs of pi0 samples on train
    prompts drawn by the env (:func:`reference_pairs`); None when ``n`` is 0."""
    if not n:
        return None
    gen, ref = agent.generator(2), agent.instance.reference
    return agent.collector.pairs(n, agent.seed_for(1), lambda prompts: reference_pairs(
        ref, prompts, gen))


@dataclasses.dataclass
class BestOfNConfig(AgentConfig):
    """n samples from pi0, the best by a BT reward model fitted on the available data.

    The RM (``reward_model``: its settings) is fitted on the offline dataset;
    ``query_pairs`` more pairs of pi0 samples are labelled through the env first
    (default: none when there is offline data, else the whole budget).
    """

    n: int = 16
    query_pairs: int | None = None
    reward_model: RewardModelConfig = dataclasses.field(default_factory=RewardModelConfig)

    def check(self) -> None:
        super().check()
        check(self.n >= 1, f"n must be >= 1, got {self.n!r}")
        check(self.query_pairs is None or self.query_pairs >= 0,
              f"query_pairs must be >= 0, got {self.query_pairs!r}")

    def pairs_to_query(self, instance: Any) -> int:
        if self.query_pairs is not None:
            return self.query_pairs
        has_data = instance.offline_dataset is not None and len(instance.offline_dataset) > 0
        return 0 if has_data else instance.query_budget

    def check_env(self, instance: Any) -> None:
        self.reward_model.resolved_kind(instance)
        q = self.pairs_to_query(instance)
        has_data = instance.offline_dataset is not None and len(instance.offline_dataset) > 0
        check(has_data or q > 0,
              "best_of_n needs preference data: an offline dataset or queries to label pi0 pairs")
        if q:
            check_budget("best_of_n", 1, q, instance)


@register_agent("best_of_n")
class BestOfNAgent(Agent):
    """Inference-time alignment: best-of-n of pi0 by a fitted reward model."""

    Config = BestOfNConfig
    description = "best of n samples of pi0 under a BT reward model fitted on the data"

    def collect(self, t: int) -> PreferenceData | None:
        return query_reference_pairs(self, self.config.pairs_to_query(self.instance))

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        data = self.offline + self.data
        self.reward_fn = fit_reward_model(self.instance, data, self.config.reward_model,
                                          seed=self.config.seed)
        self.policy = best_of_n_policy(self.instance.reference, self.reward_fn, self.config.n)
        self.reward_model = self.reward_fn
        self.global_step += 1
        return {"train/rm_pairs": len(data)}


@register_agent("reference")
class ReferenceAgent(Agent):
    """pi0 itself: normalized score 0, KL 0."""

    description = "the reference policy pi0, unchanged"
    uses_offline_data = False

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        self.policy = self.instance.reference
        return {}
