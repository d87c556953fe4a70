"""Online iterative DPO with an exploring enhancer (Xiong et al. 2024, §5, Algorithm 2).

Reference implementation: RLHFlow's Online-RLHF recipe (Dong et al. 2024).

For t = 0..T-1, over m prompts drawn by the env:

1. the main agent pi_t samples a1; the enhancer samples a2 (``reference``: pi0;
   ``temperature``: pi_t at a higher temperature; ``rejection_sampling``: n
   samples from pi_t, the best and the worst by the agent's own reward
   estimate, either DPO's implicit reward beta * log(pi_t / pi0) or a BT reward
   model fitted on the data so far);
2. the m pairs are labelled by one batched vector-env step (m queries);
3. the data accumulate (the hybrid setting starts from the offline data);
4. pi_{t+1} is trained by DPO. ``recipe="xiong"`` (default): the reference fixed at pi0,
   on all the data so far, from pi0 (the paper's Algorithm 2) or, with ``warm_start``,
   continuing from pi_t. ``recipe="rlhflow"``: RLHFlow's Online-RLHF loop (Dong et al.
   2024): start *and* reference are the previous iterate pi_t, and only the round's new
   pairs are trained on (round 0: from and against pi0, on the offline data too when
   ``use_offline``); the implicit reward that ranks samples stays beta * log(pi_t / pi0).
   ``recipe="oaif"``: online DPO as Guo et al. (2024, "Direct Language Model Alignment
   from Online AI Feedback", Algorithm 1) run it: continue from pi_t, reference pi0, on the
   round's new pairs only.

Enhancers: ``reference`` (a2 ~ pi0), ``temperature`` (pi_t at a higher temperature),
``rejection_sampling`` (best vs worst of n), ``policy`` (a second sample of pi_t: OAIF's two
on-policy samples).

**XPO** (Xie et al. 2024, "Exploratory Preference Optimization", Algorithm 1): with
``xpo_alpha`` = alpha > 0 and ``enhancer="reference"`` the loss adds the optimism term
alpha * log pi(a~ | x) for the pair's reference sample a~ ~ pi0 (per pair, averaged like
the DPO loss), which pushes probability away from what pi0 already plays. The term is
unbounded below when a~ loses its pair, so alpha is small; the ``xpo`` agent is this
recipe with warm starts on all the data so far, as the paper's argmin over D_t.

The budget is spent exactly: T * m queries. Pairs with identical responses
are queried (the count is kept exact) but carry no preference and are not fed
to the loss. Resume (``learn(resume_from=checkpoint_dir)``) is the base loop's:
each round's pairs are written as soon as they are paid for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from agents.algorithms.dpo import DPOConfig, PreferenceAgent
from agents.base import check, register_agent
from agents.collect import check_budget
from agents.data import PreferenceData
from agents.reward_models import RewardModelConfig, fit_reward_model

__all__ = ["IterativeDPOConfig", "IterativeDPOAgent", "ENHANCERS", "RECIPES", "OnlineDPOAgent",
           "XPOAgent"]

ENHANCERS = ("reference", "temperature", "rejection_sampling", "policy")
RECIPES = ("xiong", "rlhflow", "oaif")


@dataclasses.dataclass
class IterativeDPOConfig(DPOConfig):
    """T ``iterations`` of m ``prompts_per_iteration`` (None: the query budget divided by T);
    ``enhancer`` and its ``enhancer_temperature`` / ``n_samples``; ``rs_reward`` (implicit
    or reward_model, with ``reward_model`` its settings); ``recipe`` (xiong or rlhflow: see
    the module docstring); ``warm_start`` (xiong only); ``use_offline``."""

    iterations: int = 4
    prompts_per_iteration: int | None = None
    enhancer: str = "rejection_sampling"
    enhancer_temperature: float = 1.5
    n_samples: int = 8
    rs_reward: str = "implicit"
    reward_model: RewardModelConfig = dataclasses.field(default_factory=RewardModelConfig)
    warm_start: bool = False
    use_offline: bool = True
    recipe: str = "xiong"
    xpo_alpha: float = 0.0

    def check(self) -> None:
        super().check()
        check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations!r}")
        check(not (self.xpo_alpha and self.select_iterate == "holdout"),
              "select_iterate='holdout' does not combine with xpo_alpha > 0 (XPO's reference "
              "samples are matched to every paid pair, held-out ones included)")
        check(self.enhancer in ENHANCERS, f"enhancer must be one of {ENHANCERS}, got {self.enhancer!r}")
        check(self.rs_reward in ("implicit", "reward_model"),
              f"rs_reward must be 'implicit' or 'reward_model', got {self.rs_reward!r}")
        check(self.n_samples >= 2, f"n_samples must be >= 2, got {self.n_samples!r}")
        check(self.recipe in RECIPES, f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        check(not (self.recipe != "xiong" and self.warm_start),
              f"warm_start belongs to recipe='xiong'; recipe={self.recipe!r} always starts from "
              "the previous iterate")
        check(self.xpo_alpha >= 0, f"xpo_alpha must be >= 0, got {self.xpo_alpha!r}")
        check(self.xpo_alpha == 0 or self.enhancer == "reference",
              "xpo_alpha (XPO's optimism term) is defined on pi0's samples: it needs "
              "enhancer='reference'")
        check(self.enhancer_temperature > 0, "enhancer_temperature must be > 0")
        m = self.prompts_per_iteration
        check(m is None or m >= 1, f"prompts_per_iteration must be >= 1, got {m!r}")

    def per_round(self, instance: Any) -> int:
        """m: ``prompts_per_iteration``, or the query budget divided by the iterations."""
        return self.prompts_per_iteration or instance.query_budget // self.iterations

    def check_env(self, instance: Any) -> None:
        super().check_env(instance)
        check_budget("iterative_dpo", self.iterations, self.per_round(instance), instance)
        self.reward_model.resolved_kind(instance)


@register_agent("iterative_dpo")
class IterativeDPOAgent(PreferenceAgent):
    """Online / hybrid iterative DPO with a main agent and an enhancer."""

    Config = IterativeDPOConfig
    description = "online iterative DPO with a rejection-sampling enhancer (Xiong et al. 2024)"
    relative_cost = 5.0  # the longest run on TinyInstruct-v0 (134 s), second on LinearBT-v0

    def n_rounds(self) -> int:
        return self.config.iterations

    def setup(self) -> None:
        self.m = self.config.per_round(self.instance)
        if not hasattr(self, "explore_samples"):
            self.explore_samples: list[str | None] = []
        self.estimates: dict[int, Any] = {}
        # pi_t's implicit rewards, until pi_t changes
        self.implicit_memo: dict[tuple[str, str], float] = {}
        if self.start_round == 0:
            self.policy = self.new_policy()
        else:
            self.policy = self.policy.trainable_copy()  # resumed: continue from pi_t

    @property
    def uses_offline_data(self) -> bool:  # type: ignore[override]
        return self.config.use_offline

    def all_data(self) -> PreferenceData:
        offline = self.offline if self.config.use_offline else PreferenceData()
        return offline + self.data

    # -- one round ------------------------------------------------------------------------------
    def collect(self, t: int) -> PreferenceData:
        gen = self.generator(2, t)
        proposed: list[tuple] = []

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            a1, a2 = self.propose(prompts, gen, t)
            proposed.extend(zip(prompts, a1, a2))
            return a1, a2

        new = self.collector.pairs(self.m, self.seed_for(1, t), propose)
        if self.config.xpo_alpha:
            self.remember_reference_samples(new, proposed)
        return new

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        assert new is not None
        agreement = self.agreement(new, t)  # the estimate before this round's training
        self.forget_estimates()
        c = self.config
        if c.recipe in ("rlhflow", "oaif") and t > 0:  # from pi_t, on the new pairs only
            reference = self.policy.copy(frozen=True) if c.recipe == "rlhflow" else None
            self.policy = self.policy.trainable_copy()
            self.train(self.policy, new, seed_tag=t, reference=reference,
                       **self.optimism(new, t))
        elif c.recipe in ("rlhflow", "oaif"):  # round 0: from and against pi0
            self.policy = self.new_policy()
            offline = self.offline if c.use_offline else PreferenceData()
            self.train(self.policy, offline + new, seed_tag=t,
                       **self.optimism(offline + new, t, n_offline=len(offline)))
        else:
            self.policy = self.policy if c.warm_start else self.new_policy()
            data = self.all_data()
            self.train(self.policy, data, seed_tag=t,
                       **self.optimism(data, t, n_offline=len(data) - len(self.data)))
        return {"oracle/preference_agreement": agreement,
                "oracle/identical_pairs": float(new.identical()),
                "oracle/queries_paid_by_agent": float(self.collector.spent)}

    # -- XPO's optimism term ------------------------------------------------------------------
    def optimism(self, data: PreferenceData, t: int, n_offline: int = 0) -> dict[str, Any]:
        """The trainer's XPO arguments for ``data`` (its last pairs the rounds' own, in
        order; the first ``n_offline`` offline pairs carry no reference sample)."""
        if not self.config.xpo_alpha:
            return {}
        own = self.explore_samples[-(len(data) - n_offline):] if len(data) > n_offline else []
        return {"xpo_alpha": self.config.xpo_alpha,
                "xpo_samples": [None] * n_offline + list(own)}

    def remember_reference_samples(self, new: PreferenceData, proposed: list[tuple]) -> None:
        """For each labelled pair, which of its responses pi0 drew (XPO's a~), matched in
        order against the proposals (ties were dropped by the collector, order kept)."""
        j = 0
        for p, c, r in zip(new.prompts, new.chosen, new.rejected):
            while j < len(proposed) and not (proposed[j][0] == p and {c, r} == {
                    proposed[j][1], proposed[j][2]}):
                j += 1
            self.explore_samples.append(proposed[j][2] if j < len(proposed) else None)
            j += 1

    def state(self) -> dict[str, Any]:
        return {"explore_samples": list(self.explore_samples)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.explore_samples = list(state.get("explore_samples", []))

    # -- the main agent and the enhancer ------------------------------------------------------
    def implicit_reward(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """beta * log(pi_t / pi0): DPO's implicit reward of the current policy.

        Values are remembered until pi_t changes (:meth:`fit` forgets them), so the round's
        agreement reuses what ranking its samples computed. Both log-probs come from the
        same float computation (the samples of a prompt after one copy of it), so where
        pi_t equals pi0 (round 0) every reward is exactly 0 and the ranking's ties break by
        sample order, not by rounding; the sampler's own log-probs are not used here for
        that reason."""
        known = self.implicit_memo
        todo = list(dict.fromkeys((p, r) for p, r in zip(prompts, responses)
                                  if (p, r) not in known))
        if todo:
            ps, rs = [p for p, _ in todo], [r for _, r in todo]
            with torch.no_grad():
                lr = (self.policy.log_prob(ps, rs).double().cpu()
                      - self.instance.reference.log_prob(ps, rs).double().cpu())
            beta = self.config.beta or self.instance.eta
            known.update(zip(todo, (beta * lr).tolist()))
        return np.array([known[(p, r)] for p, r in zip(prompts, responses)], dtype=np.float64)

    def forget_estimates(self) -> None:
        """pi_t is about to change: its remembered implicit rewards go."""
        self.implicit_memo.clear()

    def estimate(self, t: int) -> Any:
        """Round ``t``'s reward estimate that ranks samples: the implicit reward of pi_t, or a
        BT RM fitted on the data before the round (fitted once per round)."""
        c = self.config
        if c.rs_reward == "reward_model" and c.enhancer == "rejection_sampling":
            if t not in self.estimates:
                rm = fit_reward_model(self.instance, self.all_data(), c.reward_model, seed=c.seed)
                self.reward_model = rm
                self.estimates = {t: lambda p, r: np.asarray(rm(p, r))}
            return self.estimates[t]
        return self.implicit_reward

    def agreement(self, new: PreferenceData, t: int) -> float:
        """How often round ``t``'s estimate ranks a labelled pair as the oracle did (ties 1/2)."""
        pairs = [(p, c, r) for p, c, r in zip(new.prompts, new.chosen, new.rejected) if c != r]
        if not pairs:
            return float("nan")
        reward = self.estimate(t)
        ps = [p for p, _, _ in pairs]
        ec, er = reward(ps, [c for _, c, _ in pairs]), reward(ps, [r for _, _, r in pairs])
        return float(np.mean(np.where(ec > er, 1.0, np.where(ec == er, 0.5, 0.0))))

    def propose(self, prompts: list[str], gen: torch.Generator, t: int
                ) -> tuple[list[str], list[str]]:
        """(a1 from the main agent, a2 from the enhancer) for each prompt."""
        c, pi_t, ref = self.config, self.policy, self.instance.reference
        if c.enhancer == "rejection_sampling":
            reward = self.estimate(t)
            samples = pi_t.sample(prompts, n=c.n_samples, generator=gen)
            flat_p = [p for p, row in zip(prompts, samples) for _ in row]
            scores = reward(flat_p, [y for row in samples for y in row]).reshape(len(prompts), -1)
            a1, a2 = [], []
            for row, s in zip(samples, scores):
                best = int(np.argmax(s))
                distinct = [j for j in range(len(row)) if row[j] != row[best]]
                worst = distinct[int(np.argmin(s[distinct]))] if distinct else best
                a1.append(row[best])
                a2.append(row[worst])
            return a1, a2
        if c.enhancer == "policy":  # two on-policy samples (OAIF)
            pairs = pi_t.sample(prompts, n=2, generator=gen)
            return [r[0] for r in pairs], [r[1] for r in pairs]
        a1 = [r[0] for r in pi_t.sample(prompts, n=1, generator=gen)]
        if c.enhancer == "reference":
            a2 = [r[0] for r in ref.sample(prompts, n=1, generator=gen)]
        else:
            a2 = [r[0] for r in pi_t.sample(prompts, n=1, temperature=c.enhancer_temperature,
                                            generator=gen)]
        return a1, a2


@dataclasses.dataclass
class OnlineDPOConfig(IterativeDPOConfig):
    """OAIF's defaults: two on-policy samples, a DPO step on each round's pairs from the
    previous iterate with pi0 as the reference, online labels only."""

    iterations: int = 8
    enhancer: str = "policy"
    recipe: str = "oaif"
    use_offline: bool = False


@register_agent("online_dpo")
class OnlineDPOAgent(IterativeDPOAgent):
    """Online DPO / OAIF (Guo et al. 2024, arXiv 2402.04792, Algorithm 1)."""

    Config = OnlineDPOConfig
    description = "online DPO (OAIF): two on-policy samples labelled, a DPO step on them"


@dataclasses.dataclass
class XPOConfig(IterativeDPOConfig):
    """XPO's defaults: pi_t against a pi0 sample, the optimism term alpha log pi(a~), warm
    starts on all the data so far (the paper's argmin over D_t)."""

    enhancer: str = "reference"
    warm_start: bool = True
    xpo_alpha: float = 1e-3
    use_offline: bool = False


@register_agent("xpo")
class XPOAgent(IterativeDPOAgent):
    """Exploratory Preference Optimization (Xie et al. 2024, arXiv 2405.21046, Algorithm 1)."""

    Config = XPOConfig
    description = "XPO: DPO plus the optimism term alpha log pi(a~) on pi0's samples"
