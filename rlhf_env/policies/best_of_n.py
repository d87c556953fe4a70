"""Best-of-n of a policy under a reward function: exact on finite tables, sampled on LMs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_env.errors import DataError
from rlhf_env.policies.base import CONFIG_NAME, Policy, load_policy, register_policy_class
from rlhf_env.policies.closed_forms import best_of_n_table
from rlhf_env.policies.finite import Catalog, FinitePolicy

__all__ = ["FiniteBestOfN", "SampledBestOfN", "best_of_n_policy"]


@register_policy_class
class FiniteBestOfN(FinitePolicy):
    """Best-of-n of a finite policy under a reward table, as an exact distribution
    (:func:`rlhf_env.policies.closed_forms.best_of_n_table`).

    Args:
        catalog: the prompts and candidate responses.
        log_table: ``(N, K)`` log-probabilities of best-of-n (see :meth:`of`).
        n: the number of samples it keeps the best of (for the record).
    """

    def __init__(self, catalog: Catalog, log_table: torch.Tensor | np.ndarray, n: int) -> None:
        super().__init__(catalog)
        self.n = int(n)
        self.register_buffer("log_table", torch.as_tensor(log_table, dtype=torch.float64).clone())

    @classmethod
    def of(cls, base: FinitePolicy, rewards: np.ndarray, n: int) -> FiniteBestOfN:
        """Best-of-n of ``base`` when responses are ranked by the ``(N, K)`` table ``rewards``."""
        out = best_of_n_table(base.probs_table().detach().double().cpu().numpy(), rewards, n)
        return cls(base.catalog, np.log(np.clip(out, 1e-300, None)), n)

    def logits(self) -> torch.Tensor:
        return self.log_table

    def config(self) -> dict[str, Any]:
        return {**self.catalog.to_config(), "n": self.n}

    @classmethod
    def from_config(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> FiniteBestOfN:
        return cls(Catalog(config["prompts"], config["responses"]), state["log_table"],
                   config["n"])


@register_policy_class
class SampledBestOfN(Policy):
    """Best-of-n of a policy under a reward model, by sampling (language envs).

    ``sample`` draws n responses per requested sample and keeps the highest
    scored. The exact log-probability of best-of-n sampling is intractable for
    language models; ``log_prob`` returns log base(y|x) + log n - (n - 1)/n, so
    that the KL estimate equals the analytic best-of-n KL (Beirami et al. 2024:
    an upper bound on the true KL).

    Args:
        base: the policy sampled from.
        reward_model: scores ``(prompts, responses)``; saving needs a
            :class:`~rlhf_env.lm.reward_model.RewardModel`.
        n: samples per kept response.
    """

    def __init__(self, base: Policy, reward_model: Any, n: int) -> None:
        super().__init__()
        self.base, self.reward_model, self.n = base, reward_model, int(n)

    def sample(self, prompts: Sequence[str], n: int = 1, temperature: float = 1.0, *,
               generator: torch.Generator | None = None, **kwargs: Any) -> list[list[str]]:
        cands = self.base.sample(prompts, n=n * self.n, temperature=temperature,
                                 generator=generator, **kwargs)
        flat_p = [p for p, row in zip(prompts, cands) for _ in row]
        scores = np.asarray(self.reward_model(flat_p, [y for row in cands for y in row]),
                            dtype=np.float64).reshape(len(prompts), -1)
        return [[row[k * self.n + int(np.argmax(s[k * self.n:(k + 1) * self.n]))]
                 for k in range(n)] for row, s in zip(cands, scores)]

    def log_prob(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        shift = float(np.log(self.n) - (self.n - 1) / self.n)
        return self.base.log_prob(prompts, responses) + shift

    def save(self, path: str | Path) -> Path:
        """Write ``base/`` (the policy), ``reward_model/`` (HF folder) and ``policy.json``."""
        save_rm = getattr(self.reward_model, "save", None)
        if save_rm is None:
            raise DataError(
                f"best-of-{self.n} under a {type(self.reward_model).__name__} cannot be saved: "
                "its reward model is not a rlhf_env.lm.reward_model.RewardModel")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.base.save(path / "base")
        save_rm(path / "reward_model")
        meta = {"class": type(self).__name__, "config": {"n": self.n}}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load_folder(cls, path: Path, config: dict[str, Any], base: Policy | None = None
                    ) -> SampledBestOfN:
        from rlhf_env.lm.reward_model import RewardModel

        return cls(load_policy(path / "base", base=base),
                   RewardModel(str(path / "reward_model")), int(config["n"]))


def best_of_n_policy(reference: Policy, reward_fn: Any, n: int) -> Policy:
    """Best-of-n of ``reference`` under ``reward_fn``: exact on finite policies, sampled otherwise."""
    if isinstance(reference, FinitePolicy):
        cat = reference.catalog
        n_p, k = cat.shape
        table = np.asarray(reward_fn([p for p in cat.prompts for _ in range(k)],
                                     list(cat.responses) * n_p)).reshape(n_p, k)
        return FiniteBestOfN.of(reference, table, n)
    return SampledBestOfN(reference, reward_fn, n)
