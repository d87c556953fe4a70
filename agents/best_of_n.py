"""Anchor rows for every leaderboard: pi0 itself, and best-of-n of pi0 under a fitted RM."""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.base import Agent, AgentConfig, check, register_agent
from agents.policies import best_of_n_policy
from agents.reward_models import fit_reward_model
from agents.trainer import PreferenceData

__all__ = ["BestOfNConfig", "BestOfNAgent", "ReferenceAgent"]


@dataclasses.dataclass
class BestOfNConfig(AgentConfig):
    """n samples from pi0, the best by a BT reward model fitted on the available data.

    The RM is fitted on the offline dataset; ``query_pairs`` more pairs of pi0
    samples are labelled through the env first (default: none when there is
    offline data, else the whole budget).
    """

    n: int = 16
    query_pairs: int | None = None
    reward_model: str = "auto"

    def validate(self, env: Any) -> None:
        super().validate(env)
        check(isinstance(self.n, int) and self.n >= 1, f"n must be an int >= 1, got {self.n!r}")
        has_data = env.offline_dataset is not None and len(env.offline_dataset) > 0
        q = self.query_pairs
        check(q is None or (isinstance(q, int) and 0 <= q <= env.queries_left),
              f"query_pairs must be in [0, {env.queries_left}] (queries left), got {q!r}")
        check(has_data or (q is None and env.queries_left > 0) or bool(q),
              "best_of_n needs preference data: an offline dataset or queries to label pi0 pairs")


@register_agent("best_of_n")
class BestOfNAgent(Agent):
    """Inference-time alignment: best-of-n of pi0 by a fitted reward model."""

    Config = BestOfNConfig
    description = "best of n samples of pi0 under a BT reward model fitted on the data"

    def learn(self, callback: Any = None, resume_from: Any = None) -> BestOfNAgent:
        data = PreferenceData.from_dataset(self.u.offline_dataset)
        q = self.config.query_pairs
        if q is None:
            q = 0 if len(data) else self.u.queries_left
        if q:
            venv = self.u.make_vec(q)
            obs, _ = venv.reset(seed=self.seed_for(1))
            prompts = list(obs["prompt"])
            pairs = self.u.reference.sample(prompts, n=2, generator=self.generator(2))
            _, _, _, _, info = venv.step(([p[0] for p in pairs], [p[1] for p in pairs]))
            data.extend(prompts, info["final_info"]["chosen"], info["final_info"]["rejected"])
            self.queries_spent += q
        self.reward_fn = fit_reward_model(self.u, data, kind=self.config.reward_model,
                                          seed=self.config.seed)
        self.policy = best_of_n_policy(self.u, self.reward_fn, self.config.n)
        self.logger.log({"oracle/queries_used": self.u.queries_used,
                         "train/pairs": len(data)}, 0)
        if callback is not None:
            callback(self, {"iteration": 0, "pairs": len(data)})
        self.logger.close()
        return self


@register_agent("reference")
class ReferenceAgent(Agent):
    """pi0 itself: normalized score 0, KL 0."""

    description = "the reference policy pi0, unchanged"

    def learn(self, callback: Any = None, resume_from: Any = None) -> ReferenceAgent:
        self.policy = self.u.reference
        if callback is not None:
            callback(self, {"iteration": 0})
        self.logger.close()
        return self
