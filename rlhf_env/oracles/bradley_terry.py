"""Bradley-Terry preferences over a reward function, and the reward-model oracle.

For two responses a1, a2 to a prompt x the oracle says a1 is preferred with probability

    P(a1 > a2 | x) = sigmoid((r(x, a1) - r(x, a2)) / temperature)          (Bradley-Terry)

or, with ``deterministic=True``, whichever has the larger reward (Gao et al.'s noiseless
argmax; equal rewards are broken by a fair coin). ``r`` is the env's gold reward unless
the oracle is given its own reward function.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.oracles.base import (
    Choice,
    Labels,
    Oracle,
    OracleContext,
    RewardFn,
    finite_rewards,
    sigmoid,
)

__all__ = ["BradleyTerry", "RewardModelOracle"]


class BradleyTerry(Oracle):
    """Bradley-Terry labels over a reward function (the env's gold reward by default).

    Args:
        temperature: preferences are ``sigmoid((r1 - r2) / temperature)``; > 0. At
            temperature 1 (the default) the labels follow the BT model of r* itself, so
            DPO's beta equals the env's eta; at temperature T the implied reward is r*/T.
        deterministic: prefer the larger reward (argmax); equal rewards by a fair coin.
        reward_fn: label from this reward instead of the env's gold reward.

    Every call draws exactly one uniform per pair from the env's generator, in every
    mode, so the env's streams do not depend on the mode.
    """

    name = "bt"

    def __init__(self, temperature: float = 1.0, *, deterministic: bool = False,
                 reward_fn: RewardFn | None = None) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                math.isfinite(temperature) and temperature > 0):
            raise InvalidArgumentError(
                f"temperature must be a finite number > 0, got {temperature!r}")
        if not isinstance(deterministic, (bool, np.bool_)):
            raise InvalidArgumentError(
                f"deterministic must be True or False, got {deterministic!r}")
        if reward_fn is not None and not callable(reward_fn):
            raise InvalidArgumentError("reward_fn must be callable r(prompts, responses)")
        self.temperature = float(temperature)
        self.deterministic = bool(deterministic)
        self.reward_fn = reward_fn
        self.gold: RewardFn | None = None  # the env's gold reward, once bound

    def bind(self, context: OracleContext) -> BradleyTerry:
        if self.reward_fn is not None:
            return self
        bound = copy.copy(self)
        bound.gold = context.reward
        return bound

    def _reward(self) -> RewardFn:
        fn = self.reward_fn or self.gold
        if fn is None:
            raise InvalidArgumentError(
                f"{self!r} has no reward function: pass it to an env (oracle=...), which binds "
                "it to the env's gold reward, or give reward_fn=")
        return fn

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward of each (prompt, response), float64 ``(n,)``."""
        return finite_rewards(self._reward(), prompts, responses)

    def probability(self, r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
        """P(first preferred) for rewards ``r1``, ``r2``, shape ``(n,)``."""
        if self.deterministic:
            return np.where(r1 > r2, 1.0, np.where(r1 < r2, 0.0, 0.5))
        return sigmoid((np.asarray(r1) - np.asarray(r2)) / self.temperature)

    def label(self, prompts: Sequence[str], responses_1: Sequence[str],
              responses_2: Sequence[str], rng: np.random.Generator) -> Labels:
        n = len(prompts)
        # one reward call for the whole batch of pairs
        r = self.rewards(list(prompts) * 2, list(responses_1) + list(responses_2))
        u = rng.random(n)  # one uniform per query, in every mode, so streams stay aligned
        return Labels.from_answers(responses_1, responses_2, u < self.probability(r[:n], r[n:]))

    def choice_probabilities(self, prompts: Sequence[str], responses_1: Sequence[str],
                             responses_2: Sequence[str]) -> Choice:
        """P(first preferred) of each pair from :meth:`probability`; a BT oracle never ties."""
        n = len(prompts)
        r = self.rewards(list(prompts) * 2, list(responses_1) + list(responses_2))
        return Choice(self.probability(r[:n], r[n:]), np.zeros(n))

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.rewards(prompts, responses)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "temperature": self.temperature,
                               "deterministic": self.deterministic}
        if self.reward_fn is not None:
            out["reward_fn"] = getattr(self.reward_fn, "name", type(self.reward_fn).__name__)
        return out


class RewardModelOracle(BradleyTerry):
    """Bradley-Terry labels from a reward model of its own (not the env's gold reward).

    The setting of Gao et al. (2023) with the roles split: the gold RM judges
    (:func:`rlhf_env.evaluate`), another RM labels the training data. ``model`` is a
    :class:`~rlhf_env.lm.reward_model.RewardModel`, a hub id or a local folder.
    """

    name = "reward-model"

    def __init__(self, model: Any, temperature: float = 1.0, *, deterministic: bool = False,
                 device: str | None = None) -> None:
        if isinstance(model, str):
            from rlhf_env.lm.reward_model import RewardModel

            model = RewardModel(model, device=device)
        super().__init__(temperature, deterministic=deterministic, reward_fn=model)
