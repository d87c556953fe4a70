"""Views of exact envs for RL libraries that want ``Discrete`` spaces (stable-baselines3, CleanRL).

:class:`DiscreteBandit` presents an exact env (a finite catalog of prompts and candidate
responses) as a one-step bandit with observation ``Discrete(N)`` — the prompt's index —
and action ``Discrete(K)`` — the response's index. The reward is the oracle's, through the
env's own step: every step is one query, charged to the env's budget as any other. With
``kl_shaped=True`` it adds eta · log pi0(a|x), so that an algorithm with an entropy bonus of
eta (SB3's PPO with ``ent_coef=eta``) maximises exactly the env's objective
E[r] − eta · KL(pi || pi0) (the entropy term plus this shaping is −eta · KL per prompt).

    env = rlhf_env.make("LinearBT-v0", setting="online", feedback="reward", query_budget=50_000)
    view = DiscreteBandit(env, kl_shaped=True)
    model = stable_baselines3.PPO("MlpPolicy", view, ent_coef=env.unwrapped.eta)
    model.learn(20_000, callback=view.evaluation_callback(every=4096))  # logs eval/ without paying
    rlhf_env.evaluate(view.policy_of(model), env)    # the way back: a Policy of the harness

:meth:`DiscreteBandit.policy_of` turns any SB3 model trained on the view (its action
distribution at each prompt index) into a :class:`~rlhf_env.policies.TabularPolicy` the
harness evaluates exactly; :meth:`DiscreteBandit.evaluation_callback` is an SB3 callback
that evaluates with :func:`rlhf_env.evaluate` (privileged, free, exact) instead of SB3's
``EvalCallback``, whose episodes would be paid queries.
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

    def policy_of(self, model: Any) -> Any:
        """The policy an SB3 ``model`` trained on this view plays: its action probabilities
        at every prompt index, as a :class:`~rlhf_env.policies.TabularPolicy`."""
        import torch

        from rlhf_env.policies import TabularPolicy

        if not hasattr(model, "policy") or not hasattr(model.policy, "get_distribution"):
            raise InvalidArgumentError(
                f"policy_of takes a stable-baselines3 model with a stochastic policy (PPO, A2C, "
                f"...), got {type(model).__name__}")
        n = self.observation_space.n
        with torch.no_grad():
            obs = model.policy.obs_to_tensor(np.arange(n))[0]
            dist = model.policy.get_distribution(obs).distribution
            logits = torch.log_softmax(dist.logits.double(), -1)
        if tuple(logits.shape) != self.catalog.shape:
            raise InvalidArgumentError(
                f"the model's actions ({tuple(logits.shape)}) do not fit this view's prompts x "
                f"responses {self.catalog.shape}")
        return TabularPolicy(self.catalog, logits)

    def evaluation_callback(self, every: int = 1000) -> Any:
        """An SB3 callback: every ``every`` steps, :func:`rlhf_env.evaluate` of
        :meth:`policy_of` the model, recorded under ``eval/`` in SB3's logger and kept in
        ``callback.history``. No query is paid (SB3's ``EvalCallback`` would step the env)."""
        from stable_baselines3.common.callbacks import BaseCallback

        from rlhf_env.evaluation import evaluate

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidArgumentError(f"every must be an int >= 1, got {every!r}")
        view = self

        class EvaluateCallback(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.history: list[dict[str, float]] = []

            def _on_step(self) -> bool:
                if self.n_calls % every == 0:
                    m = evaluate(view.policy_of(self.model), view.env)
                    self.history.append({"timesteps": self.num_timesteps, **m})
                    for k in ("normalized_score", "objective", "kl", "gold_reward"):
                        self.logger.record(f"eval/{k}", m[k])
                return True

        return EvaluateCallback()

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
