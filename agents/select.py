"""Return the best iterate, not the last: selection on held-out *charged* labels.

An iterative agent's rounds need not improve monotonically (an audit saw one run score
0.80-0.85 in rounds 2-3 and return 0.44 after round 4). With
``select_iterate="holdout"`` every round's newly paid pairs are split: a share
``holdout_fraction`` (drawn from the agent's seed and the round, so a resume splits the
same way) is kept aside and never trained on, and after each round the policy is scored on
all pairs held out so far. The agent returns the iterate with the best score; the curves
of every round are still logged and evaluated as before.

The score is the Bradley-Terry log-likelihood of the held-out labels under the policy's
**implicit reward** ``r_pi(x, a) = scale * (log pi(a|x) - log pi0(a|x))``: for a policy of
the Gibbs form pi ∝ pi0 exp(r / eta) this is exactly the likelihood of the reward it
optimises (``scale = eta``), and for a DPO-trained policy it is DPO's own reward model
(``scale = beta``). It uses the agent's labels only: never the judge, the gold reward or
pi*. Its cost is the held-out labels, which the policy does not learn from.

The incumbent is compared with each new iterate on the *current* held-out set (which grows
with the rounds), and replaced when the new one scores higher. With a checkpoint folder the
incumbent is saved (``selected/``) and restored on resume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from agents.data import PreferenceData
from rlhf_env.policies import Policy

__all__ = ["IterateSelector", "held_out_log_likelihood"]


@torch.no_grad()
def held_out_log_likelihood(policy: Policy, reference: Policy, data: PreferenceData,
                            scale: float) -> float:
    """Mean BT log-likelihood of ``data``'s labels under ``scale * log(pi / pi0)``.

    A hard label (no ``confidence``) says chosen beat rejected; a soft one is
    P(chosen beats rejected), and the pair contributes its expected log-likelihood.
    """
    if len(data) == 0:
        return float("nan")

    def implicit(responses: list[str]) -> np.ndarray:
        lp = policy.log_prob(data.prompts, responses).detach().double().cpu().numpy()
        lr = reference.log_prob(data.prompts, responses).detach().double().cpu().numpy()
        return scale * (lp - lr)

    margin = implicit(data.chosen) - implicit(data.rejected)
    p = np.ones(len(data)) if data.confidence is None else np.asarray(data.confidence, float)
    # log sigma(m) = -log(1 + e^-m), computed stably
    ll = p * -np.logaddexp(0.0, -margin) + (1 - p) * -np.logaddexp(0.0, margin)
    return float(ll.mean())


class IterateSelector:
    """Holds out a share of every round's pairs and keeps the best iterate; see the module."""

    def __init__(self, reference: Policy, *, fraction: float, scale: float, seed: int) -> None:
        self.reference = reference
        self.fraction = float(fraction)
        self.scale = float(scale)
        self.seed = int(seed)
        self.held = PreferenceData()
        self.best: Policy | None = None
        self.best_round: int | None = None

    def split(self, t: int, new: PreferenceData) -> tuple[PreferenceData, PreferenceData]:
        """(pairs to train on, pairs held out) of round ``t``'s ``new`` pairs; a round of
        fewer than two pairs holds nothing out."""
        n = len(new)
        k = int(round(self.fraction * n)) if n >= 2 else 0
        k = min(max(k, 1 if n >= 2 and self.fraction > 0 else 0), n - 1) if n else 0
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5E1EC7, t]))
        out = set(rng.permutation(n)[:k].tolist())

        def pick(keep: bool) -> PreferenceData:
            idx = [i for i in range(n) if (i in out) != keep]
            conf = None if new.confidence is None else [new.confidence[i] for i in idx]
            return PreferenceData([new.prompts[i] for i in idx], [new.chosen[i] for i in idx],
                                  [new.rejected[i] for i in idx], conf)

        held = pick(False)
        self.held.add(held)
        return pick(True), held

    def score(self, policy: Policy) -> float:
        return held_out_log_likelihood(policy, self.reference, self.held, self.scale)

    def update(self, t: int, policy: Policy) -> tuple[float, bool]:
        """Score round ``t``'s ``policy`` against the incumbent on the held-out pairs so far;
        returns ``(its score, whether it became the incumbent)``."""
        mine = self.score(policy)
        if self.best is not None and len(self.held):  # nothing held out yet: the last wins
            if not (math.isfinite(mine) and mine > self.score(self.best)):
                return mine, False
        self.best, self.best_round = policy.copy(frozen=True), t
        return mine, True

    def state(self) -> dict[str, Any]:
        return {"selected_round": self.best_round}
