"""Anchor rows for every leaderboard: pi0 itself, and best-of-n of pi0 under a fitted RM."""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.base import AgentConfig, check, register_agent
from agents.collect import check_budget
from agents.data import PreferenceData
from agents.loop import Agent
from agents.reward_models import RewardModelConfig, fit_reward_model
from rlhf_env.policies import best_of_n_policy

__all__ = ["BestOfNConfig", "BestOfNAgent", "ReferenceAgent"]


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
        q = self.config.pairs_to_query(self.instance)
        if not q:
            return None
        gen, ref = self.generator(2), self.instance.reference

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            pairs = ref.sample(prompts, n=2, generator=gen)
            return [p[0] for p in pairs], [p[1] for p in pairs]

        return self.collector.pairs(q, self.seed_for(1), propose)

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        data = self.offline + self.data
        self.reward_fn = fit_reward_model(self.instance, data, self.config.reward_model,
                                          seed=self.config.seed)
        self.policy = best_of_n_policy(self.instance.reference, self.reward_fn, self.config.n)
        self.global_step += 1
        return {"train/rm_pairs": len(data)}


@register_agent("reference")
class ReferenceAgent(Agent):
    """pi0 itself: normalized score 0, KL 0."""

    description = "the reference policy pi0, unchanged"

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        self.policy = self.instance.reference
        return {}
