"""Offline preference pairs an env labels with its oracle when it is made (outside the budget)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.oracles import Labels, Oracle

__all__ = ["pairs_dataset", "label_pairs", "sample_reference_pairs"]


def pairs_dataset(prompts: Sequence[str], labels: Labels) -> Any:
    """A ``datasets.Dataset`` with prompt/chosen/rejected columns (ties are dropped: they
    carry no preference)."""
    import datasets  # heavy; only when an env has offline data

    keep = ~labels.tie
    return datasets.Dataset.from_dict({
        "prompt": [p for p, k in zip(prompts, keep) if k],
        "chosen": [str(c) for c in labels.chosen[keep]],
        "rejected": [str(r) for r in labels.rejected[keep]],
    })


def label_pairs(oracle: Oracle, prompts: Sequence[str], responses_1: Sequence[str],
                responses_2: Sequence[str], rng: np.random.Generator) -> Any:
    """Label the pairs with ``oracle`` (one call) into a prompt/chosen/rejected dataset."""
    return pairs_dataset(prompts, oracle.label(list(prompts), list(responses_1),
                                               list(responses_2), rng))


def sample_reference_pairs(reference: Any, oracle: Oracle, train_prompts: Sequence[str],
                           n_pairs: int, rng: np.random.Generator, n_samples: int = 4) -> Any:
    """Pairs of pi0's samples on train prompts, labelled by ``oracle``.

    For ``n_pairs`` train prompts drawn uniformly, ``n_samples`` samples of pi0; the first
    two that differ form a pair (prompts whose samples are all identical are skipped).
    """
    idx = np.floor(rng.random(n_pairs) * len(train_prompts)).astype(np.int64)
    prompts = [train_prompts[i] for i in idx]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    samples = reference.sample(prompts, n=n_samples, generator=gen)
    kept, r1, r2 = [], [], []
    for p, cands in zip(prompts, samples):
        other = next((c for c in cands[1:] if c != cands[0]), None)
        if other is not None:
            kept.append(p)
            r1.append(cands[0])
            r2.append(other)
    return label_pairs(oracle, kept, r1, r2, rng)
