"""Preference and reward oracles, and the ledger that counts every query.

The gold oracle of an environment is a :class:`BradleyTerryOracle` over a
reward function ``r(prompts, responses) -> array``. For two responses a1, a2
to a prompt x it says a1 is preferred with probability

    P(a1 > a2 | x) = sigmoid((r(x, a1) - r(x, a2)) / temperature)      (Bradley-Terry)

or, with ``deterministic=True``, whichever has the larger reward (ties are
broken by a fair coin). The oracle owns no randomness: the env passes the
generator it draws from, so preferences are reproducible for a seed.

Every call that reaches the oracle through an env is charged to one
:class:`QueryLedger` shared by all views (single and vector envs) of a
problem instance. A charge is checked before the oracle runs and recorded
only once it has returned, so a failing call costs nothing and no call
escapes the count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from rlhf_env.errors import InvalidArgumentError, QueryBudgetExceeded

__all__ = ["RewardFn", "QueryLedger", "BradleyTerryOracle", "sigmoid"]

RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""A reward function: ``r(prompts, responses)`` -> float array of shape ``(len(prompts),)``."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, elementwise."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


class QueryLedger:
    """Counts oracle queries against a budget.

    Args:
        budget: the number of queries allowed (0 for the offline setting).
    """

    def __init__(self, budget: int) -> None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
            raise InvalidArgumentError(
                f"query_budget must be a non-negative integer, got {budget!r}"
            )
        self.budget = int(budget)
        self.used = 0

    @property
    def left(self) -> int:
        """Queries that can still be made."""
        return self.budget - self.used

    @contextmanager
    def charge(self, n: int) -> Iterator[None]:
        """Reserve ``n`` queries for the body of the ``with`` block.

        Raises :class:`QueryBudgetExceeded` (counting nothing) when fewer than ``n``
        are left. The queries are recorded only if the block completes; if it
        raises, nothing is counted.
        """
        if n > self.left:
            raise QueryBudgetExceeded(self.used, self.budget, n)
        yield
        self.used += n

    def __repr__(self) -> str:
        return f"QueryLedger(used={self.used}, budget={self.budget})"


class BradleyTerryOracle:
    """Bradley-Terry preferences over a reward function.

    Args:
        reward_fn: ``r(prompts, responses) -> array`` of shape ``(n,)``.
        temperature: preferences are ``sigmoid((r1 - r2) / temperature)``; must be > 0.
        deterministic: if True, prefer the response with the larger reward (argmax
            mode); ties are broken by a fair coin.
    """

    def __init__(
        self, reward_fn: RewardFn, *, temperature: float = 1.0, deterministic: bool = False
    ) -> None:
        if not temperature > 0:
            raise InvalidArgumentError(f"temperature must be > 0, got {temperature!r}")
        self.reward_fn = reward_fn
        self.temperature = float(temperature)
        self.deterministic = bool(deterministic)

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward of each (prompt, response) pair, float64 of shape ``(n,)``."""
        r = np.asarray(self.reward_fn(prompts, responses), dtype=np.float64).reshape(-1)
        if r.shape[0] != len(prompts):
            raise ValueError(
                f"reward function returned {r.shape[0]} values for {len(prompts)} prompts"
            )
        return r

    def probability(
        self, prompts: Sequence[str], responses_1: Sequence[str], responses_2: Sequence[str]
    ) -> np.ndarray:
        """P(response_1 preferred over response_2), shape ``(n,)``."""
        r1, r2 = self.rewards(prompts, responses_1), self.rewards(prompts, responses_2)
        return self._probability(r1, r2)

    def _probability(self, r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
        if self.deterministic:
            return np.where(r1 > r2, 1.0, np.where(r1 < r2, 0.0, 0.5))
        return sigmoid((r1 - r2) / self.temperature)

    def preferences(
        self,
        prompts: Sequence[str],
        responses_1: Sequence[str],
        responses_2: Sequence[str],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw preferences for a batch of pairs in one reward call.

        Returns:
            ``(y, r1, r2)``: ``y[i] = 1`` when ``responses_1[i]`` is preferred, else 0
            (int64); and the two responses' rewards (float64).
        """
        n = len(prompts)
        r = self.rewards(list(prompts) + list(prompts), list(responses_1) + list(responses_2))
        r1, r2 = r[:n], r[n:]
        u = rng.random(n)  # one uniform per query, in every mode, so streams stay aligned
        y = (u < self._probability(r1, r2)).astype(np.int64)
        return y, r1, r2
