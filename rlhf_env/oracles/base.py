"""The Oracle protocol: who answers "which of these two responses is preferred?".

An oracle labels a batch of pairs (:meth:`Oracle.label`) and, where the env
offers reward feedback, scores a batch of responses (:meth:`Oracle.score`).
Everything about *who* answers is the oracle's business: a Bradley-Terry draw
over a gold reward, a noiseless argmax, label flips, a pool of simulated
annotators, a reward model on another machine.

Oracles are written without the env's gold reward; when an env is made it
calls :meth:`Oracle.bind` with an :class:`OracleContext` (the gold reward
function, and how the env measures response length), and uses the bound copy.
An oracle that does not label from the gold reward (a reward model of its
own, a remote service) returns itself.

Envs never call an oracle directly: the problem instance wraps it with the
query ledger (:mod:`rlhf_env.oracles.ledger`), which charges every call.
Randomness comes only from the ``numpy.random.Generator`` the env passes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import InvalidArgumentError

__all__ = ["RewardFn", "LengthFn", "OracleContext", "Labels", "Choice", "Oracle", "sigmoid",
           "finite_rewards", "word_count"]

RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]
"""A reward function: ``r(prompts, responses)`` -> float array of shape ``(len(prompts),)``."""

LengthFn = Callable[[Sequence[str]], np.ndarray]
"""The length of each response (the unit is the env's: words on language envs)."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, elementwise."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def word_count(responses: Sequence[str]) -> np.ndarray:
    """The number of whitespace-separated words of each response, float64 ``(n,)``."""
    return np.array([len(r.split()) for r in responses], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class OracleContext:
    """What an env gives an oracle when it is made.

    Attributes:
        reward: the gold reward r*(x, a).
        length: the length of responses, for length-biased annotators (default: words).
        name: the env id or family, for messages.
    """

    reward: RewardFn
    length: LengthFn = word_count
    name: str = "env"


def finite_rewards(reward_fn: RewardFn, prompts: Sequence[str], responses: Sequence[str]
                   ) -> np.ndarray:
    """``reward_fn(prompts, responses)`` as float64 ``(n,)``; NaN, inf or a wrong shape raise."""
    r = np.asarray(reward_fn(prompts, responses), dtype=np.float64).reshape(-1)
    if r.shape[0] != len(prompts):
        raise InvalidArgumentError(
            f"the reward function returned {r.shape[0]} values for {len(prompts)} responses")
    if not np.isfinite(r).all():
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise InvalidArgumentError(
            f"the reward function returned {r[bad]} for response {bad} ({responses[bad]!r:.60}): "
            "rewards must be finite")
    return r


@dataclasses.dataclass(frozen=True)
class Labels:
    """The answers to a batch of n pair queries.

    Attributes:
        preference: ``(n,)`` int64, 1 when the first response is preferred, else 0
            (for a tie: 1, with ``tie`` set; the pair is kept in its shown order).
        chosen, rejected: ``(n,)`` object arrays of strings, the pair ordered by the answer.
        tie: ``(n,)`` bool, the annotator declared no preference.
        info: further per-pair arrays of the oracle's (e.g. ``"annotator"``).
    """

    preference: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    tie: np.ndarray
    info: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_answers(cls, responses_1: Sequence[str], responses_2: Sequence[str],
                     first: np.ndarray, tie: np.ndarray | None = None,
                     **info: np.ndarray) -> Labels:
        """Order each pair into (chosen, rejected) by ``first`` (True: the first is preferred)."""
        first = np.asarray(first, dtype=bool)
        tie = np.zeros(len(first), dtype=bool) if tie is None else np.asarray(tie, dtype=bool)
        first = first | tie  # a tie keeps the shown order
        a = np.empty(len(first), dtype=object)
        b = np.empty(len(first), dtype=object)
        a[:], b[:] = list(responses_1), list(responses_2)
        return cls(first.astype(np.int64), np.where(first, a, b), np.where(first, b, a), tie,
                   dict(info))

    @property
    def reward(self) -> np.ndarray:
        """The step reward of each pair: 1.0 when the first is preferred, 0.0 when the
        second is, 0.5 for a tie."""
        return np.where(self.tie, 0.5, self.preference.astype(np.float64))

    def __len__(self) -> int:
        return len(self.preference)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The exact answer probabilities of an oracle for n pairs, each as shown.

    Attributes:
        first: ``(n,)`` P(the first shown response is preferred, no tie).
        tie: ``(n,)`` P(a tie).

    P(the second is preferred) is :attr:`second` = 1 - first - tie.
    """

    first: np.ndarray
    tie: np.ndarray

    @property
    def second(self) -> np.ndarray:
        """``(n,)`` P(the second shown response is preferred, no tie)."""
        return np.clip(1.0 - self.first - self.tie, 0.0, 1.0)


class Oracle(ABC):
    """Answers preference queries (and reward queries) for a batch; see the module docstring.

    Subclasses implement :meth:`label`, and :meth:`score` if they offer reward feedback,
    and :meth:`bind` if they label from the env's gold reward.
    """

    name: str = "oracle"

    def bind(self, context: OracleContext) -> Oracle:
        """The oracle an env made with ``context`` uses (default: this one, unchanged)."""
        return self

    @abstractmethod
    def label(self, prompts: Sequence[str], responses_1: Sequence[str],
              responses_2: Sequence[str], rng: np.random.Generator) -> Labels:
        """Label ``n`` pairs (one per prompt) in one call, drawing only from ``rng``."""

    def choice_probabilities(self, prompts: Sequence[str], responses_1: Sequence[str],
                             responses_2: Sequence[str]) -> Choice | None:
        """The exact probabilities of this oracle's answers for ``n`` pairs as shown, or None
        when it does not know them in closed form (the default: a remote service, a person).

        :func:`rlhf_env.oracles.report` compares measured label frequencies with them.
        """
        return None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Rewards of ``n`` responses, float64 ``(n,)`` (reward feedback)."""
        raise InvalidArgumentError(
            f"the oracle {self.name!r} answers preference queries only; make the env with "
            "feedback='preference' or an oracle that scores responses")

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description (name and parameters), for run records."""
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"
