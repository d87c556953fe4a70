"""J(pi*) on sampled envs: a Monte Carlo estimate of the best achievable objective.

For the KL-regularized bandit the optimum is the Gibbs policy pi* ∝ pi0 exp(r*/eta), and

    J(pi*) = eta · E_x log E_{a~pi0} exp(r*(x, a) / eta)        (Xiong et al. 2024, §2)

On a language env the inner expectation is estimated from ``n`` samples of pi0 per
held-out prompt: v(x) = eta · log (1/n) sum_j exp(r*(x, a_j) / eta). By Jensen's
inequality E[v(x)] <= eta · log E exp(r*/eta), so the estimate is a **lower bound** in
expectation, whose bias shrinks as n grows (the sample mean of exp(r/eta) is dominated
by the rare best responses). :func:`optimal_objective` reports the estimate at the
largest n with its standard error over prompts, and the estimates at smaller n drawn
from the same samples, so the trend with n is visible. A normalized score computed
against it, (J(pi) − J(pi0)) / (J*_hat − J(pi0)), is accordingly biased *up*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.judging import instance_of, judge
from rlhf_env.policies.closed_forms import logsumexp

__all__ = ["optimal_objective"]


def optimal_objective(env: Any, *, n_samples: int = 256, n_prompts: int | None = None,
                      seed: int = 0) -> dict[str, float]:
    """Monte Carlo J(pi*) on the env's held-out prompts; see the module docstring.

    Args:
        env: a sampled env (or its instance).
        n_samples: pi0 samples per prompt (the estimate's n).
        n_prompts: the first ``n_prompts`` held-out prompts (default: all).
        seed: seeds pi0's sampling.

    Returns:
        ``optimal_objective`` (at n = n_samples), ``optimal_objective_stderr`` (over prompts),
        ``optimal_objective/n=<k>`` for k = 1, 4, 16, ... below n_samples, and
        ``reference_objective``: J(pi0) = E r* from the same samples. Cached on the env's
        judge for the same arguments.
    """
    inst = instance_of(env)
    j = judge(inst)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InvalidArgumentError(f"n_samples must be an int >= 1, got {n_samples!r}")
    key = ("optimal_objective", n_samples, n_prompts, seed)
    if key in j.cache:
        return dict(j.cache[key])
    prompts = list(inst.eval_prompts[:n_prompts] if n_prompts else inst.eval_prompts)
    gen = torch.Generator().manual_seed(seed)
    samples = inst.reference.sample(prompts, n=n_samples, generator=gen)
    r = j.gold_rewards([p for p in prompts for _ in range(n_samples)],
                       [y for row in samples for y in row]).reshape(len(prompts), n_samples)
    eta = inst.eta

    def estimate(n: int) -> np.ndarray:  # eta log mean_j exp(r_j / eta), per prompt
        return eta * (logsumexp(r[:, :n] / eta) - np.log(n))

    v = estimate(n_samples)
    out = {"optimal_objective": float(v.mean()), "reference_objective": float(r.mean()),
           "optimal_objective_stderr": float(v.std(ddof=1) / np.sqrt(len(v)))
           if len(v) > 1 else float("nan")}
    k = 1
    while k < n_samples:
        out[f"optimal_objective/n={k}"] = float(estimate(k).mean())
        k *= 4
    j.cache[key] = dict(out)
    return out
