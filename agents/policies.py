"""Policies agents build: trainable copies of pi0, and best-of-n of pi0 under a reward model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.policies import FinitePolicy, LogLinearPolicy, Policy, TabularPolicy
from rlhf_env.policies.finite import best_of_n_table

__all__ = ["init_policy", "FiniteBestOfN", "SampledBestOfN", "best_of_n_policy", "is_finite"]


def is_finite(env: Any) -> bool:
    """Whether the env is a finite-action bandit (a catalog of candidates)."""
    return hasattr(env, "catalog")


def init_policy(env: Any, parametrization: str = "auto") -> Policy:
    """A trainable policy equal to pi0.

    ``"loglinear"`` (finite envs with features: pi ∝ pi0 exp(<w, phi>), the class
    that holds the Gibbs optimum), ``"tabular"`` (finite envs: free logits), or
    for language envs a trainable copy of the reference model. ``"auto"`` picks
    log-linear where the env has features.
    """
    ref = env.reference
    if not is_finite(env):
        return ref.trainable_copy()
    if parametrization == "auto":
        parametrization = "loglinear" if hasattr(env, "features") else "tabular"
    if parametrization == "loglinear":
        return LogLinearPolicy(env.catalog, ref.log_probs_table().detach(), env.features)
    if parametrization == "tabular":
        return TabularPolicy.from_policy(ref)
    raise ValueError(f"parametrization must be auto, loglinear or tabular, got {parametrization!r}")


class FiniteBestOfN(FinitePolicy):
    """Best-of-n of a finite policy under a reward table, as an exact distribution
    (:func:`rlhf_env.policies.finite.best_of_n_table`)."""

    def __init__(self, base: FinitePolicy, rewards: np.ndarray, n: int) -> None:
        super().__init__(base.catalog)
        out = best_of_n_table(base.probs_table().detach().double().numpy(), rewards, n)
        self.n = int(n)
        self.register_buffer("log_table", torch.from_numpy(np.log(np.clip(out, 1e-300, None))))

    def logits(self) -> torch.Tensor:
        return self.log_table


class SampledBestOfN(Policy):
    """Best-of-n of a policy under a reward function, by sampling (language envs).

    ``sample`` draws n responses per requested sample and keeps the highest
    scored. The exact log-probability of best-of-n sampling is intractable for
    language models; ``log_prob`` returns log base(y|x) + log n - (n - 1)/n, so
    that the KL estimate equals the analytic best-of-n KL (Beirami et al. 2024:
    an upper bound on the true KL).
    """

    def __init__(self, base: Policy, reward_fn: Callable[[Sequence[str], Sequence[str]], Any],
                 n: int) -> None:
        super().__init__()
        self.base, self.reward_fn, self.n = base, reward_fn, int(n)

    def sample(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0, *,
               generator: torch.Generator | None = None) -> list[list[str]]:
        cands = self.base.sample(prompts, n=n * self.n, temperature=temperature,
                                 generator=generator)
        out = []
        for p, row in zip(prompts, cands):
            scores = np.asarray(self.reward_fn([p] * len(row), row))
            out.append([row[k * self.n + int(np.argmax(scores[k * self.n : (k + 1) * self.n]))]
                        for k in range(n)])
        return out

    def log_prob(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        shift = float(np.log(self.n) - (self.n - 1) / self.n)
        return self.base.log_prob(prompts, responses) + shift


def best_of_n_policy(env: Any, reward_fn: Any, n: int) -> Policy:
    """Best-of-n of pi0 under ``reward_fn``: exact on finite envs, sampled otherwise."""
    ref = env.reference
    if is_finite(env):
        cat = env.catalog
        n_p, k = cat.shape
        table = np.asarray(reward_fn([p for p in cat.prompts for _ in range(k)],
                                     list(cat.responses) * n_p)).reshape(n_p, k)
        return FiniteBestOfN(ref, table, n)
    return SampledBestOfN(ref, reward_fn, n)
