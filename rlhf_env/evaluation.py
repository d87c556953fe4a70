"""Evaluation: the same metrics for every agent, outside the query budget.

``evaluate(policy, env)`` reports, on the env's evaluation prompts:

* ``gold_reward`` = E_x E_{a~pi} r*(x, a)
* ``kl``          = E_x KL(pi(.|x) || pi0(.|x))   (reverse KL, nats)
* ``objective``   = gold_reward - eta * kl        (J(pi), the bandit's objective)
* ``win_rate``    = E_x E_{a~pi, b~pi0} sigmoid((r*(x,a) - r*(x,b)) / T),
  the probability under the gold Bradley-Terry model that a response of the
  policy beats one of pi0 (ties count one half).

On exact (finite-action) envs these are exact sums over all candidates, and
the dict adds ``optimal_objective`` J(pi*), ``reference_objective`` J(pi0) and
``normalized_score`` = (J(pi) - J(pi0)) / (J(pi*) - J(pi0)): 0 for pi0, 1 for pi*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.oracles import sigmoid
from rlhf_env.policies import Policy

__all__ = ["evaluate", "exact_metrics"]


def evaluate(policy: Policy, env: Any, **options: Any) -> dict[str, float]:
    """Evaluate ``policy`` on ``env``'s held-out prompts; see the module docstring.

    Args:
        policy: any :class:`~rlhf_env.policies.Policy` over the env's responses.
        env: an env made by :func:`rlhf_env.make` (wrapped or not) or a vector view.
        **options: evaluation options of the env family (none for exact envs).

    Returns:
        A dict of floats (nats for ``kl``; the gold reward's units for the rest).
    """
    base = env.unwrapped
    if hasattr(base, "catalog") and hasattr(base, "gold_rewards"):
        if options:
            raise InvalidArgumentError(
                f"evaluation on an exact env is exact and takes no options, got {sorted(options)}"
            )
        return exact_metrics(policy, base)
    raise NotImplementedError(
        f"{type(base).__name__} has no evaluation: it is neither exact (a catalog of "
        "candidates) nor a sampled language env"
    )


def exact_metrics(policy: Policy, env: Any) -> dict[str, float]:
    """Exact metrics on a finite-action env (sums over every candidate response)."""
    catalog = env.catalog
    prompts = list(env.eval_prompts)
    pid = catalog.prompt_ids(prompts)
    k = len(catalog.responses)
    with torch.no_grad():
        logp = policy.log_prob(
            [p for p in prompts for _ in range(k)], list(catalog.responses) * len(prompts)
        ).double().reshape(len(prompts), k).cpu().numpy()
    mass = np.exp(logp).sum(axis=1)
    if not np.allclose(mass, 1.0, atol=1e-6):
        raise InvalidArgumentError(
            f"the policy puts mass {mass.min():.6f}..{mass.max():.6f} on the candidates of some "
            "prompts (must be 1): exact evaluation needs a policy over the env's candidates"
        )
    pi = np.exp(logp)
    log_ref = env.reference_log_probs()[pid]
    ref = np.exp(log_ref)
    r = env.gold_rewards()[pid]
    eta = env.eta
    temperature = env._oracle.temperature

    gold = float(np.mean((pi * r).sum(axis=1)))
    # 0 * log 0 = 0: mask zero-probability actions
    kl = float(np.mean(np.where(pi > 0, pi * (logp - log_ref), 0.0).sum(axis=1)))
    kl = max(kl, 0.0)  # KL >= 0; clamp rounding noise (~1e-17) at pi = pi0
    win = float(np.mean(np.einsum(
        "na,nb,nab->n", pi, ref, sigmoid((r[:, :, None] - r[:, None, :]) / temperature)
    )))
    # J(pi*) = eta * E_x log sum_a pi0(a|x) exp(r*(x,a)/eta)
    z = log_ref + r / eta
    m = z.max(axis=1, keepdims=True)
    optimal = float(np.mean(eta * (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))))
    reference = float(np.mean((ref * r).sum(axis=1)))
    objective = gold - eta * kl
    return {
        "gold_reward": gold,
        "kl": kl,
        "objective": objective,
        "win_rate": win,
        "optimal_objective": optimal,
        "reference_objective": reference,
        "normalized_score": (objective - reference) / (optimal - reference),
    }
