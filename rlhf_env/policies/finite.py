"""Exact policies for finite-action bandits (every prompt has the same K candidates).

The whole distribution is a ``(N, K)`` table of log-probabilities, so KL,
expected reward and the Gibbs optimum are exact sums, not estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.errors import InvalidActionError, InvalidArgumentError, closest
from rlhf_env.policies.base import Policy, register_policy_class

__all__ = ["Catalog", "FinitePolicy", "TabularPolicy", "LogLinearPolicy"]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Catalog:
    """The prompts and the candidate responses of a finite-action bandit.

    Every prompt shares the same ``K`` response strings (the arms); what a
    response *means* (its features, its reward) depends on the prompt.
    """

    def __init__(self, prompts: Sequence[str], responses: Sequence[str]) -> None:
        self.prompts: tuple[str, ...] = tuple(prompts)
        self.responses: tuple[str, ...] = tuple(responses)
        self._pid = {p: i for i, p in enumerate(self.prompts)}
        self._rid = {r: i for i, r in enumerate(self.responses)}
        if len(self._pid) != len(self.prompts) or len(self._rid) != len(self.responses):
            raise InvalidArgumentError("prompts and responses of a Catalog must be unique")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.prompts), len(self.responses)

    def prompt_ids(self, prompts: Sequence[str]) -> np.ndarray:
        """Indices of ``prompts``; raises :class:`InvalidActionError` for an unknown prompt."""
        try:
            return np.fromiter((self._pid[p] for p in prompts), dtype=np.int64, count=len(prompts))
        except (KeyError, TypeError):
            bad = next(p for p in prompts if not isinstance(p, str) or p not in self._pid)
            raise InvalidActionError(
                f"prompt {_short(bad)} is not one of the {len(self.prompts)} prompts of this bandit."
                + (closest(bad, self.prompts) if isinstance(bad, str) and len(bad) < 200 else "")
            ) from None

    def response_ids(self, responses: Sequence[str]) -> np.ndarray:
        """Indices of ``responses``; raises :class:`InvalidActionError` for a non-candidate."""
        try:
            return np.fromiter(
                (self._rid[r] for r in responses), dtype=np.int64, count=len(responses)
            )
        except (KeyError, TypeError):
            bad = next(r for r in responses if not isinstance(r, str) or r not in self._rid)
            raise InvalidActionError(
                f"response {_short(bad)} is not one of the {len(self.responses)} candidate responses "
                f"({self.responses[0]!r} ... {self.responses[-1]!r})."
                + (closest(bad, self.responses) if isinstance(bad, str) and len(bad) < 200
                   else "")
            ) from None

    def to_config(self) -> dict[str, Any]:
        return {"prompts": list(self.prompts), "responses": list(self.responses)}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Catalog)
            and self.prompts == other.prompts
            and self.responses == other.responses
        )

    __hash__ = None  # type: ignore[assignment]


class FinitePolicy(Policy):
    """A policy over a :class:`Catalog`, defined by a ``(N, K)`` table of logits."""

    def __init__(self, catalog: Catalog) -> None:
        super().__init__()
        self.catalog = catalog

    def logits(self) -> torch.Tensor:
        """Unnormalised log-probabilities, shape ``(N, K)``, differentiable."""
        raise NotImplementedError

    def log_probs_table(self) -> torch.Tensor:
        """log pi(a | x) for every prompt and candidate, shape ``(N, K)``."""
        return torch.log_softmax(self.logits(), dim=-1)

    def probs_table(self) -> torch.Tensor:
        """pi(a | x), shape ``(N, K)``; rows sum to one."""
        return torch.softmax(self.logits(), dim=-1)

    def log_prob(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"log_prob got {len(prompts)} prompts and {len(responses)} responses"
            )
        pid = torch.as_tensor(self.catalog.prompt_ids(prompts))
        rid = torch.as_tensor(self.catalog.response_ids(responses))
        return self.log_probs_table()[pid, rid]

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ) -> list[list[str]]:
        if not temperature > 0:
            raise InvalidArgumentError(f"temperature must be > 0, got {temperature!r}")
        pid = torch.as_tensor(self.catalog.prompt_ids(prompts))
        with torch.no_grad():
            probs = torch.softmax(self.logits()[pid].double() / temperature, dim=-1)
            idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        names = self.catalog.responses
        return [[names[j] for j in row] for row in idx.tolist()]


@register_policy_class
class TabularPolicy(FinitePolicy):
    """Free logits per prompt and action: pi(a | x) = softmax(theta[x])[a].

    Args:
        catalog: the prompts and candidate responses.
        logits: initial ``(N, K)`` logits (default zeros, the uniform policy).
    """

    def __init__(self, catalog: Catalog, logits: torch.Tensor | np.ndarray | None = None) -> None:
        super().__init__(catalog)
        init = torch.zeros(catalog.shape, dtype=torch.float64)
        if logits is not None:
            init = torch.as_tensor(logits, dtype=torch.float64).clone()
            if tuple(init.shape) != catalog.shape:
                raise InvalidArgumentError(
                    f"logits have shape {tuple(init.shape)}, expected {catalog.shape}"
                )
        self.theta = torch.nn.Parameter(init)

    @classmethod
    def from_policy(cls, policy: FinitePolicy) -> TabularPolicy:
        """A trainable tabular copy of any finite policy (same distribution)."""
        with torch.no_grad():
            return cls(policy.catalog, policy.log_probs_table().detach().double())

    def logits(self) -> torch.Tensor:
        return self.theta

    def config(self) -> dict[str, Any]:
        return self.catalog.to_config()

    @classmethod
    def from_config(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> TabularPolicy:
        return cls(Catalog(config["prompts"], config["responses"]), state["theta"])


@register_policy_class
class LogLinearPolicy(FinitePolicy):
    """pi(a | x) ∝ pi0(a | x) · exp(<w, phi(x, a)>), the policy class of the linear bandit.

    With ``w = theta / eta`` this is the Gibbs policy of the linear reward
    ``<theta, phi>`` (Xiong et al. 2024, Eq. (3)), so the optimum of a
    LinearBT env lies inside the class.

    Args:
        catalog: the prompts and candidate responses.
        base_log_probs: log pi0, shape ``(N, K)`` (a fixed buffer).
        features: phi, shape ``(N, K, d)`` (a fixed buffer).
        w: initial weights, shape ``(d,)`` (default zeros, i.e. pi = pi0).
    """

    def __init__(
        self,
        catalog: Catalog,
        base_log_probs: torch.Tensor | np.ndarray,
        features: torch.Tensor | np.ndarray,
        w: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__(catalog)
        base = torch.as_tensor(base_log_probs, dtype=torch.float64).clone()
        phi = (features.detach().double().clone() if isinstance(features, torch.Tensor)
               else torch.tensor(np.array(features, dtype=np.float64)))
        if tuple(base.shape) != catalog.shape or tuple(phi.shape[:2]) != catalog.shape:
            raise InvalidArgumentError(
                f"base_log_probs {tuple(base.shape)} and features {tuple(phi.shape)} must "
                f"start with the catalog shape {catalog.shape}"
            )
        d = phi.shape[2]
        w0 = torch.zeros(d, dtype=torch.float64) if w is None else torch.as_tensor(w).double()
        if tuple(w0.shape) != (d,):
            raise InvalidArgumentError(f"w has shape {tuple(w0.shape)}, expected ({d},)")
        self.register_buffer("base_log_probs", base)
        self.register_buffer("features", phi)
        self.w = torch.nn.Parameter(w0.clone())

    def logits(self) -> torch.Tensor:
        return self.base_log_probs + self.features @ self.w  # (N, K)

    def config(self) -> dict[str, Any]:
        return self.catalog.to_config()

    @classmethod
    def from_config(
        cls, config: dict[str, Any], state: dict[str, torch.Tensor]
    ) -> LogLinearPolicy:
        catalog = Catalog(config["prompts"], config["responses"])
        return cls(catalog, state["base_log_probs"], state["features"], state["w"])
