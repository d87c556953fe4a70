"""Privileged diagnostics of a learned reward model: how good is the proxy an agent optimises?

Reward over-optimisation (Gao et al. 2023, "Scaling laws for reward model
over-optimization") shows when an agent's proxy reward — its reward model — keeps rising
while the gold reward stalls or falls. These functions, like :func:`rlhf_env.evaluate`,
use the judge (outside the budget), so only evaluation code calls them; the zoo logs them
over training for every agent that learns a reward model:

* :func:`proxy_reward`: the mean learned reward of a policy's samples on held-out prompts;
* :func:`reward_model_agreement`: how often the learned reward ranks a pair of pi0's
  samples on a held-out prompt as the gold reward does (pairs of equal gold reward are
  skipped; a tie of the learned reward counts one half).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.judging import instance_of, judge

__all__ = ["proxy_reward", "reward_model_agreement", "reward_diagnostics"]

RewardFn = Callable[[Sequence[str], Sequence[str]], Any]


def _prompts(inst: Any, n_prompts: int | None) -> list[str]:
    return list(inst.eval_prompts[:n_prompts] if n_prompts else inst.eval_prompts)


def proxy_reward(reward_fn: RewardFn, policy: Any, env: Any, *, n_prompts: int | None = 64,
                 n_samples: int = 2, seed: int = 0) -> float:
    """Mean of ``reward_fn`` over ``n_samples`` samples of ``policy`` per held-out prompt."""
    inst = instance_of(env)
    prompts = _prompts(inst, n_prompts)
    gen = torch.Generator().manual_seed(seed)
    ys = policy.sample(prompts, n=n_samples, generator=gen)
    flat_p = [p for p, row in zip(prompts, ys) for _ in row]
    return float(np.mean(np.asarray(reward_fn(flat_p, [y for row in ys for y in row]),
                                    dtype=np.float64)))


def reward_model_agreement(reward_fn: RewardFn, env: Any, *, n_prompts: int | None = 128,
                           pairs_per_prompt: int = 4, seed: int = 0) -> float:
    """P(the learned reward orders a pair of pi0 samples as the gold reward does), on
    held-out prompts; nan when no pair has distinct gold rewards."""
    inst = instance_of(env)
    prompts = _prompts(inst, n_prompts)
    gen = torch.Generator().manual_seed(seed)
    samples = inst.reference.sample(prompts, n=2 * pairs_per_prompt, generator=gen)
    flat_p = [p for p, row in zip(prompts, samples) for _ in row]
    flat_y = [y for row in samples for y in row]
    gold = judge(inst).gold_rewards(flat_p, flat_y).reshape(len(prompts), -1)
    proxy = np.asarray(reward_fn(flat_p, flat_y), dtype=np.float64).reshape(len(prompts), -1)
    dg = gold[:, 0::2] - gold[:, 1::2]
    dp = proxy[:, 0::2] - proxy[:, 1::2]
    keep = dg != 0
    if not keep.any():
        return float("nan")
    agree = np.where(dp == 0, 0.5, (np.sign(dp) == np.sign(dg)).astype(np.float64))
    return float(agree[keep].mean())


def reward_diagnostics(reward_fn: RewardFn, policy: Any, env: Any) -> dict[str, float]:
    """``proxy_reward`` and ``rm_agreement`` with the default sample sizes (what the zoo logs)."""
    return {"proxy_reward": proxy_reward(reward_fn, policy, env),
            "rm_agreement": reward_model_agreement(reward_fn, env)}
