"""Statistical rejection sampling optimisation (RSO; Liu et al. 2023) and its multi-step form.

RSO (offline): fit a BT reward model r on the offline data; for each prompt
draw N candidates from pi0 and accept some by statistical rejection sampling
towards the Gibbs policy pi0 * exp(r / eta) with Liu et al.'s Algorithm 1
(:func:`statistical_rejection_sampling`: sweeps over the not-yet-accepted
candidates against the max computed once per sweep). Pair the accepted
(consecutively, order flipped at random), label each pair with the fitted RM,
and train DPO (sigmoid or hinge-norm) on them. Labels are ``"hard"`` (chosen =
the higher reward, as in RSO) or ``"soft"`` (the BT probability sigmoid(r_c -
r_r) as the target of the sigmoid loss, whose optimum is then exactly the Gibbs
policy of r). Soft is the default: hard labels from a fitted RM make the pairs
separable, so the sigmoid loss has no finite minimiser (on LinearBT a log-linear
policy's KL then runs past 2 nats within a few hundred steps). With soft labels
and a log-linear policy the proposal does not matter (the optimum is the Gibbs
policy of r whatever pairs are drawn); it matters with tabular policies (which
learn only about the responses they see) and with hard labels:
``benchmarks/rso_reward_kl.py`` compares rso and multi_step_rso there.

Multi-step RSO (Xiong et al. 2024, §5): the annealed chain
pi0 -> pi0 e^{r/eta_1} -> ... -> pi0 e^{r/eta_N}, eta_1 > ... > eta_N = eta.
Stage k proposes from the policy trained at stage k-1 and accepts with the
exact density ratio to its target, log w = log pi0 - log pi_{k-1} + r / eta_k
(at stage 1 this is RSO's rule). Its pairs train pi_k, by default as the
incremental tilt pi_k = pi_{k-1} e^{r (1/eta_k - 1/eta_{k-1})}: DPO from
pi_{k-1}, with pi_{k-1} as the reference and beta = 1/(1/eta_k - 1/eta_{k-1}),
whose optimum is pi0 e^{r/eta_k} when pi_{k-1} is exact; what earlier stages
learned is kept. ``chain="pi0"`` trains each stage afresh from pi0 with beta =
eta_k instead. On LinearBT-v0 with tabular policies the incremental chain beats
one-step RSO on J at every target temperature tried, with soft labels (+0.064 at
eta' = eta, 95% paired interval [+0.044, +0.083], 10 of 10 seeds) and hard ones
(+0.270 [+0.203, +0.338]); with the log-linear class and hard labels it is worse
(the separable pairs of three stages compound; benchmarks/rso_reward_kl.py and
benchmarks/README.md). Each stage's pairs are checkpointed as the round's data
and reused on resume.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from agents.algorithms.dpo import DPOConfig, PreferenceAgent
from agents.base import check, register_agent
from agents.data import PreferenceData
from agents.reward_models import RewardModelConfig, fit_reward_model
from rlhf_env.policies import Policy

__all__ = ["statistical_rejection_sampling", "RSOConfig", "RSOAgent", "MultiStepRSOConfig",
           "MultiStepRSOAgent"]


def statistical_rejection_sampling(log_w: np.ndarray, n_accept: int, rng: np.random.Generator
                                   ) -> tuple[list[int], int]:
    """Liu et al. (2023), "Statistical Rejection Sampling Improves Preference Optimization",
    Appendix A.1, Algorithm 1: accept up to ``n_accept`` candidates, without replacement.

    ``log_w[i]`` is the log of candidate i's (unnormalised) target/proposal ratio, r_i / beta
    when the proposal is pi0 and the target pi0 e^{r/beta}. Each *sweep* computes the max
    M of ``log_w`` over the not-yet-accepted candidates once, then visits them in order and
    accepts candidate i with probability exp(log_w[i] - M) (a fresh uniform each),
    stopping as soon as ``n_accept`` are accepted; the accepted leave the pool at the end
    of the sweep and the next sweep recomputes M. The candidate at the max is always
    accepted, so every sweep makes progress. (The paper's listing keys the candidates by
    their text, so duplicates merge; we key them by position, which keeps a response drawn
    twice from pi0 twice as likely, as the target needs when duplicates are common.) Never
    more than there are candidates are accepted.

    Returns ``(accepted indices in acceptance order, proposals made)``.
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    remaining = list(range(len(log_w)))
    want = min(n_accept, len(remaining))
    accepted: list[int] = []
    proposals = 0
    while len(accepted) < want:
        top = max(log_w[i] for i in remaining)
        if top == -np.inf:
            break  # no remaining candidate has mass under the target
        taken = []
        for i in remaining:
            proposals += 1
            if rng.random() >= np.exp(log_w[i] - top):
                continue
            accepted.append(i)
            taken.append(i)
            if len(accepted) == want:
                break
        remaining = [i for i in remaining if i not in taken]
    return accepted, proposals


@dataclasses.dataclass
class RSOConfig(DPOConfig):
    """``n_candidates`` per prompt, up to ``n_accepted`` accepted (n_accepted // 2 pairs);
    ``n_prompts`` (None: every distinct prompt of the offline data); ``rs_eta`` (the
    target's temperature; None: the env's eta); ``reward_model`` (its settings);
    ``labels``: "soft" (target P = sigmoid(r_c - r_r)) or "hard" (chosen = higher r, RSO)."""

    n_candidates: int = 16
    n_accepted: int = 4
    n_prompts: int | None = None
    rs_eta: float | None = None
    reward_model: RewardModelConfig = dataclasses.field(default_factory=RewardModelConfig)
    labels: str = "soft"

    def check(self) -> None:
        super().check()
        check(self.n_candidates >= 2, f"n_candidates must be >= 2, got {self.n_candidates!r}")
        check(2 <= self.n_accepted <= self.n_candidates,
              f"n_accepted must be in [2, n_candidates={self.n_candidates}], got {self.n_accepted!r}")
        check(self.n_prompts is None or self.n_prompts >= 1, "n_prompts must be >= 1")
        check(self.rs_eta is None or self.rs_eta > 0, f"rs_eta must be > 0, got {self.rs_eta!r}")
        check(self.labels in ("hard", "soft"), f"labels must be 'hard' or 'soft', got {self.labels!r}")
        check(self.labels == "hard" or self.loss_type == "sigmoid",
              "labels='soft' needs loss_type='sigmoid' (soft labels are a cross-entropy)")

    def check_env(self, instance: Any) -> None:
        super().check_env(instance)
        self.reward_model.resolved_kind(instance)


class RejectionSamplingAgent(PreferenceAgent):
    """Shared machinery: the fitted RM, one rejection-sampling stage, labelling."""

    def validate(self) -> None:
        ds = self.instance.offline_dataset
        check(ds is not None and len(ds) > 0,
              f"{self.name} fits its reward model on offline data: make the env with "
              "setting='offline' or 'hybrid'")

    def setup(self) -> None:
        offline = self.offline
        self.rm = fit_reward_model(self.instance, offline, self.config.reward_model,
                                   seed=self.config.seed)
        self.reward_model = self.rm
        prompts = list(dict.fromkeys(offline.prompts))
        n = self.config.n_prompts
        if n is not None:
            idx = np.random.default_rng(self.seed_for(4)).permutation(len(prompts))[:n]
            prompts = [prompts[i] for i in sorted(idx)]
        self.prompts = prompts
        self.eta = self.config.rs_eta or self.instance.eta
        self.acceptance_rate = float("nan")  # of the last stage sampled in this session

    def stage(self, proposal: Policy, eta_k: float, stage: int) -> PreferenceData:
        """Sample, accept, pair and label for one target pi0 * exp(r / eta_k)."""
        c, ref = self.config, self.instance.reference
        cands = proposal.sample(self.prompts, n=c.n_candidates, generator=self.generator(5, stage))
        flat_p = [p for p, row in zip(self.prompts, cands) for _ in row]
        flat_y = [y for row in cands for y in row]
        r = np.asarray(self.rm(flat_p, flat_y), dtype=np.float64).reshape(len(self.prompts), -1)
        log_w = r / eta_k
        if proposal is not ref:
            with torch.no_grad():
                log_w = log_w + (ref.log_prob(flat_p, flat_y) - proposal.log_prob(flat_p, flat_y)
                                 ).double().cpu().numpy().reshape(r.shape)
        rng = np.random.default_rng(self.seed_for(6, stage))
        soft = c.labels == "soft"
        data = PreferenceData(confidence=[] if soft else None)
        accepted_total, proposals_total = 0, 0
        for p, row, lw, rr in zip(self.prompts, cands, log_w, r):
            acc, props = statistical_rejection_sampling(lw, c.n_accepted, rng)
            accepted_total += len(acc)
            proposals_total += props
            for a, b in zip(acc[0::2], acc[1::2]):
                if rng.random() < 0.5:  # flip the order at random
                    a, b = b, a
                if rr[a] == rr[b]:
                    continue  # a tie (often the same response twice): no preference
                win, lose = (a, b) if rr[a] > rr[b] else (b, a)
                conf = [1.0 / (1.0 + np.exp(rr[lose] - rr[win]))] if soft else None
                data.extend([p], [row[win]], [row[lose]], conf)
        self.acceptance_rate = accepted_total / max(1, proposals_total)
        return data


@register_agent("rso")
class RSOAgent(RejectionSamplingAgent):
    """RSO: rejection-sampled pairs from pi0 towards pi0 e^{r/eta}, labelled by a fitted RM."""

    Config = RSOConfig
    description = "statistical rejection sampling optimisation (Liu et al. 2023)"

    def collect(self, t: int) -> PreferenceData:
        return self.stage(self.instance.reference, self.eta, 0)

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        assert new is not None
        self.policy = self.new_policy()
        self.train(self.policy, new, beta=self.config.beta or self.eta)
        rate, self.acceptance_rate = self.acceptance_rate, float("nan")
        return {"train/acceptance_rate": rate, "train/rs_pairs": len(new),
                "train/rs_eta": self.eta}


@dataclasses.dataclass
class MultiStepRSOConfig(RSOConfig):
    """``schedule``: eta_k / eta for each stage, decreasing, ending at 1.0 (eta_N = eta);
    ``chain``: "incremental" (tilt pi_{k-1}) or "pi0" (each stage from pi0)."""

    schedule: tuple[float, ...] = (4.0, 2.0, 1.0)
    chain: str = "incremental"

    def check(self) -> None:
        super().check()
        s = tuple(self.schedule)
        check(len(s) >= 1 and all(a > b for a, b in zip(s, s[1:])) and abs(s[-1] - 1.0) < 1e-12,
              f"schedule must decrease strictly and end at 1.0 (eta_N = eta), got {s!r}")
        check(self.chain in ("pi0", "incremental"),
              f"chain must be 'pi0' or 'incremental', got {self.chain!r}")


@register_agent("multi_step_rso")
class MultiStepRSOAgent(RejectionSamplingAgent):
    """Multi-step rejection sampling along the annealed chain pi0 -> ... -> pi0 e^{r/eta}."""

    Config = MultiStepRSOConfig
    description = "multi-step rejection sampling along an annealed chain (Xiong et al. 2024)"

    def n_rounds(self) -> int:
        return len(self.config.schedule)

    def setup(self) -> None:
        super().setup()
        k = self.start_round
        self.proposal: Policy = self.instance.reference if k == 0 else self.policy.freeze()
        self.prev_eta = float("inf") if k == 0 else self.config.schedule[k - 1] * self.eta

    def collect(self, k: int) -> PreferenceData:
        return self.stage(self.proposal, self.config.schedule[k] * self.eta, k)

    def fit(self, k: int, new: PreferenceData | None) -> dict[str, float]:
        assert new is not None
        eta_k = self.config.schedule[k] * self.eta
        if self.config.chain == "incremental" and k > 0:
            # pi_k = pi_{k-1} * exp(r (1/eta_k - 1/eta_{k-1})): DPO from pi_{k-1} with
            # pi_{k-1} as reference and beta = 1 / (1/eta_k - 1/eta_{k-1})
            policy = self.proposal.trainable_copy()
            beta_k = 1.0 / (1.0 / eta_k - 1.0 / self.prev_eta)
            self.train(policy, new, beta=beta_k, seed_tag=k, reference=self.proposal)
        else:
            policy = self.new_policy()
            self.train(policy, new, beta=eta_k, seed_tag=k)
        self.prev_eta = eta_k
        self.proposal = self.policy = policy.copy(frozen=True)
        rate, self.acceptance_rate = self.acceptance_rate, float("nan")
        return {"train/acceptance_rate": rate, "train/rs_pairs": len(new), "train/rs_eta": eta_k}
