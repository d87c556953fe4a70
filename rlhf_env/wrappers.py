"""Views of exact envs for RL libraries that want ``Discrete`` spaces (stable-baselines3, CleanRL).

:class:`DiscreteBandit` presents an exact env (a finite catalog of prompts and candidate
responses) as a one-step bandit with observation ``Discrete(N)`` — the prompt's index —
and action ``Discrete(K)`` — the response's index. The reward is the oracle's, through the
env's own step: every step is one query, charged to the env's budget as any other. With
``kl_shaped=True`` it adds eta · log pi0(a|x), so that an algorithm with an entropy bonus of
eta (SB3's PPO with ``ent_coef=eta``) maximises exactly the env's objective
E[r] − eta · KL(pi || pi0) (the entropy term plus this shaping is −eta · KL per prompt).

    env = rlhf_env.make("LinearBT-v0", setting="online", feedback="reward", query_budget=50_000)
    model = stable_baselines3.PPO("MlpPolicy", DiscreteBandit(env, kl_shaped=True),
                                  ent_coef=env.unwrapped.eta)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlhf_env.errors import InvalidActionError, InvalidArgumentError

__all__ = ["DiscreteBandit"]


class DiscreteBandit(gym.Env):
    """An exact env as ``Discrete(N)`` prompts -> ``Discrete(K)`` responses; see the module doc.

    Args:
        env: an env made by :func:`rlhf_env.make` of an exact or linear kind, with
            ``feedback="reward"`` (one response per step; the oracle's reward).
        kl_shaped: add eta · log pi0(a|x) to the reward (see the module docstring).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env: Any, kl_shaped: bool = False) -> None:
        inst = getattr(env.unwrapped, "instance", None)
        if inst is None or not inst.exact:
            raise InvalidArgumentError(
                "DiscreteBandit needs an exact env (a finite catalog of responses), e.g. "
                f"LinearBT-v0; got {getattr(inst, 'name', type(env).__name__)}")
        if inst.feedback != "reward":
            raise InvalidArgumentError(
                "DiscreteBandit pays one response per step: make the env with "
                "feedback='reward' (a pair of responses is not one Discrete action)")
        if not isinstance(kl_shaped, bool):
            raise InvalidArgumentError(f"kl_shaped must be True or False, got {kl_shaped!r}")
        self.env, self.kl_shaped = env, kl_shaped
        self.catalog = inst.catalog
        self.eta = inst.eta
        self.log_ref = inst.reference.log_probs_table().detach().double().cpu().numpy()
        n, k = self.catalog.shape
        self.observation_space = gym.spaces.Discrete(n)
        self.action_space = gym.spaces.Discrete(k)
        self._prompt: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._prompt = int(self.catalog.prompt_ids([obs["prompt"]])[0])
        return self._prompt, info

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        if self._prompt is None:
            raise InvalidActionError("call reset() before step(): every episode is one step")
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(action):
            value = np.asarray(action) if not isinstance(action, (str, bytes)) else None
            ok = (value is not None and value.size == 1 and value.dtype != bool
                  and np.issubdtype(value.dtype, np.integer))  # an int, never a float or bool
            if ok:
                action = int(value.reshape(-1)[0])
            if not ok or not self.action_space.contains(action):
                raise InvalidActionError(
                    f"the action is an integer response index in [0, {self.action_space.n}), "
                    f"got {action!r}")
        a = int(action)
        x = self._prompt
        _, reward, terminated, truncated, info = self.env.step(self.catalog.responses[a])
        if self.kl_shaped:
            reward += self.eta * float(self.log_ref[x, a])
        self._prompt = None
        return x, float(reward), terminated, truncated, info

    def reference_probs(self) -> np.ndarray:
        """pi0 as an ``(N, K)`` table of probabilities."""
        return np.exp(self.log_ref)
