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
4. pi_{t+1} is trained by DPO with the reference fixed at pi0: from pi0 on all
   data (the paper), or warm-started from pi_t (RLHFlow), ``warm_start``.

The budget is spent exactly: T * m queries. Pairs with identical responses
are queried (the count is kept exact) but carry no preference and are not fed
to the loss. With ``checkpoint_dir`` each iteration's labelled pairs are
written as soon as they are paid for, and the policy after training;
``learn(resume_from=checkpoint_dir)`` continues without re-querying a pair.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import check, register_agent
from agents.checkpoint import Checkpointer
from agents.dpo import DPOConfig, PreferenceAgent
from agents.reward_models import fit_reward_model
from agents.trainer import PreferenceData

__all__ = ["IterativeDPOConfig", "IterativeDPOAgent", "ENHANCERS"]

ENHANCERS = ("reference", "temperature", "rejection_sampling")


@dataclasses.dataclass
class IterativeDPOConfig(DPOConfig):
    """T iterations of m prompts; see the module docstring."""

    iterations: int = 4
    prompts_per_iteration: int | None = None  # m; default: the budget divided by iterations
    enhancer: str = "rejection_sampling"
    enhancer_temperature: float = 1.5
    n_samples: int = 8
    rs_reward: str = "implicit"
    warm_start: bool = False
    use_offline: bool = True
    checkpoint_dir: str | None = None

    def validate(self, env: Any) -> None:
        super().validate(env)
        check(isinstance(self.iterations, int) and self.iterations >= 1,
              f"iterations must be an int >= 1, got {self.iterations!r}")
        check(self.enhancer in ENHANCERS, f"enhancer must be one of {ENHANCERS}, got {self.enhancer!r}")
        check(self.rs_reward in ("implicit", "reward_model"),
              f"rs_reward must be 'implicit' or 'reward_model', got {self.rs_reward!r}")
        check(self.n_samples >= 2, f"n_samples must be >= 2, got {self.n_samples!r}")
        check(self.enhancer_temperature > 0, "enhancer_temperature must be > 0")
        m = self.prompts_per_iteration
        left = env.queries_left
        if m is None:
            check(left >= self.iterations,
                  f"iterative_dpo needs queries: {left} left for {self.iterations} iterations; "
                  "make the env with setting='online' or 'hybrid' and a query_budget")
        else:
            check(isinstance(m, int) and m >= 1, f"prompts_per_iteration must be >= 1, got {m!r}")
            check(m * self.iterations <= left,
                  f"{self.iterations} iterations x {m} prompts = {m * self.iterations} queries, "
                  f"but only {left} are left; lower prompts_per_iteration or iterations")


@register_agent("iterative_dpo")
class IterativeDPOAgent(PreferenceAgent):
    """Online / hybrid iterative DPO with a main agent and an enhancer."""

    Config = IterativeDPOConfig
    description = "online iterative DPO with a rejection-sampling enhancer (Xiong et al. 2024)"

    def learn(self, callback: Any = None, resume_from: str | Path | None = None
              ) -> IterativeDPOAgent:
        c = self.config
        m = c.prompts_per_iteration or self.u.queries_left // c.iterations
        venv = self.u.make_vec(m)
        data = PreferenceData()
        if c.use_offline and self.u.offline_dataset is not None:
            data = PreferenceData.from_dataset(self.u.offline_dataset)
        folder = resume_from or c.checkpoint_dir
        ckpt = Checkpointer(folder) if folder else None
        policy, start = self._new_policy(), 0
        if resume_from is not None:
            ckpt = Checkpointer.for_resume(resume_from)
            policy, start = self._resume(ckpt, data)
        self.policy, self._data = policy, data
        bar = tqdm(range(start, c.iterations), desc="iterative_dpo", initial=start,
                   total=c.iterations, disable=self.progress_disabled)
        for t in bar:
            new = ckpt.load_pairs(t) if ckpt else None  # paid for before an interruption
            if new is not None:
                agreement = float("nan")
                identical = sum(a == b for a, b in zip(new.chosen, new.rejected))
            else:
                new, agreement, identical = self._collect(venv, t)
                if ckpt is not None:
                    ckpt.save_pairs(t, new)
            data.extend(new.prompts, new.chosen, new.rejected)
            self.policy = self.policy if c.warm_start else self._new_policy()
            result = self._train(self.policy, data, seed_tag=t)
            info = {"iteration": t, "pairs": len(data), "identical_pairs": identical,
                    **result.final_metrics}
            self.logger.log({"oracle/queries_used": self.u.queries_used,
                             "oracle/queries_spent_by_agent": self.queries_spent,
                             "oracle/preference_agreement": agreement,
                             "oracle/identical_pairs": identical,
                             "train/pairs": len(data), "train/iteration": t}, self.global_step)
            if ckpt is not None:
                ckpt.complete(t, self.policy, global_step=self.global_step,
                              queries_spent=self.queries_spent)
            bar.set_postfix(queries=self.u.queries_used,
                            loss=f"{result.final_metrics.get('loss', 0):.3f}")
            if callback is not None and callback(self, info) is False:
                break
        bar.close()
        self.logger.close()
        return self

    # -- one iteration's data -------------------------------------------------------------
    def _collect(self, venv: Any, t: int) -> tuple[PreferenceData, float, int]:
        obs, _ = venv.reset(seed=self.seed_for(1, t))
        prompts = list(obs["prompt"])
        a1, a2, est = self._pairs(prompts, self.generator(2, t))
        _, _, _, _, info = venv.step((a1, a2))
        fi = info["final_info"]
        self.queries_spent += len(prompts)
        chosen, rejected = list(fi["chosen"]), list(fi["rejected"])
        identical = sum(a == b for a, b in zip(a1, a2))
        # does the agent's reward estimate (before this round's training) agree with the oracle?
        agree = []  # 1 when the estimate ranks the pair as the oracle did, 0.5 on a tie
        for p, c, r in zip(prompts, chosen, rejected):
            if c != r:
                ec, er = est(p, c), est(p, r)
                agree.append(1.0 if ec > er else 0.5 if ec == er else 0.0)
        return PreferenceData(prompts, chosen, rejected), float(np.mean(agree)) if agree else float(
            "nan"), identical

    def _implicit_reward(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        with torch.no_grad():
            lr = self.policy.log_prob(prompts, responses) - self.u.reference.log_prob(prompts, responses)
        return (self.config.beta or self.u.eta) * lr.double().cpu().numpy()

    def _pairs(self, prompts: list[str], gen: torch.Generator) -> tuple[list[str], list[str], Any]:
        c, pi_t, ref = self.config, self.policy, self.u.reference
        reward = self._implicit_reward
        if c.rs_reward == "reward_model" and c.enhancer == "rejection_sampling":
            rm = fit_reward_model(self.u, self._data_so_far, seed=self.config.seed)
            reward = lambda p, r: np.asarray(rm(p, r))  # noqa: E731

        def est(p: str, y: str) -> float:
            return float(reward([p], [y])[0])

        if c.enhancer == "rejection_sampling":
            samples = pi_t.sample(prompts, n=c.n_samples, generator=gen)
            flat_p = [p for p, row in zip(prompts, samples) for _ in row]
            scores = reward(flat_p, [y for row in samples for y in row]).reshape(len(prompts), -1)
            a1, a2 = [], []
            for row, s in zip(samples, scores):
                distinct = [j for j in range(len(row)) if row[j] != row[int(np.argmax(s))]]
                best = int(np.argmax(s))
                worst = distinct[int(np.argmin(s[distinct]))] if distinct else best
                a1.append(row[best])
                a2.append(row[worst])
            return a1, a2, est
        a1 = [r[0] for r in pi_t.sample(prompts, n=1, generator=gen)]
        if c.enhancer == "reference":
            a2 = [r[0] for r in ref.sample(prompts, n=1, generator=gen)]
        else:
            a2 = [r[0] for r in pi_t.sample(prompts, n=1, temperature=c.enhancer_temperature,
                                            generator=gen)]
        return a1, a2, est

    @property
    def _data_so_far(self) -> PreferenceData:
        return getattr(self, "_data", PreferenceData())

    # -- resume -------------------------------------------------------------------------------
    def _resume(self, ckpt: Checkpointer, data: PreferenceData) -> tuple[Any, int]:
        state = ckpt.state()
        done = state["completed"]
        self.global_step = state.get("global_step", 0)
        self.queries_spent = state.get("queries_spent", 0)
        for t in range(done):
            pairs = ckpt.load_pairs(t)
            check(pairs is not None, f"checkpoint {ckpt.folder} lacks the pairs of iteration {t}")
            data.extend(pairs.prompts, pairs.chosen, pairs.rejected)
        if done == 0:
            return self._new_policy(), 0
        return ckpt.load_policy(done - 1).trainable_copy(), done
