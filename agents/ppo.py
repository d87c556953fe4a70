"""PPO (Schulman et al. 2017) as the RLHF baseline, on stable-baselines3's own ``PPO``.

Reference implementation: stable-baselines3 2.x ``PPO`` (used as is, not forked).

**The KL-regularized objective, exactly.** An episode is one step: prompt x,
action a. The wrapper pays r_hat(x, a) + eta·log pi0(a|x) and PPO's entropy
coefficient is eta, so per prompt PPO maximises

    E_{a~pi}[r_hat(x, a) + eta·log pi0(a|x)] + eta·H(pi(.|x))
        = E_{a~pi}[r_hat(x, a)] − eta·KL(pi(.|x) || pi0(.|x)),

the env's objective with r_hat for r*; its maximiser is the Gibbs policy
pi ∝ pi0·exp(r_hat/eta) (Xiong et al. 2024, Eq. (3)). Two SB3 defaults would
change that optimum and are turned off: advantage normalisation (it rescales
the reward, i.e. changes eta) and a hidden layer (the actor is tabular: one
logit per prompt and action, initialised at log pi0, so the class holds the
Gibbs policy exactly).

**Its reward** is a Bradley-Terry reward model fitted on the preference data the
env provides: the offline dataset, and in the online and hybrid settings pairs
of the current policy's samples labelled through the env's step, refitted each
iteration within the budget.

On language envs the same agent runs the token-level PPO of :mod:`agents.ppo_lm`
(one action per token, the per-token KL penalty to pi0 plus the RM's score at the
end, an actor-critic over the causal LM with a value head).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import Agent, AgentConfig, check, register_agent
from agents.policies import is_finite
from agents.reward_models import fit_reward_model
from agents.trainer import PreferenceData
from rlhf_env.policies import TabularPolicy

__all__ = ["KLBanditEnv", "PPOConfig", "PPOAgent", "train_ppo_on_table", "FINITE_DEFAULTS",
           "LM_DEFAULTS"]


class KLBanditEnv(gym.Env):
    """One-step episodes: observe a prompt id, choose a response id, get r + eta·log pi0.

    Observation ``Discrete(N)`` (the catalog's prompts; resets draw from ``prompt_ids``),
    action ``Discrete(K)``, reward ``reward[x, a] + eta * log_ref[x, a]``, always terminated.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, reward: np.ndarray, log_ref: np.ndarray, eta: float,
                 prompt_ids: np.ndarray | None = None) -> None:
        self.reward = np.asarray(reward, dtype=np.float64)
        self.log_ref = np.asarray(log_ref, dtype=np.float64)
        self.eta = float(eta)
        n, k = self.reward.shape
        self.prompt_ids = np.arange(n) if prompt_ids is None else np.asarray(prompt_ids)
        self.observation_space = gym.spaces.Discrete(n)
        self.action_space = gym.spaces.Discrete(k)
        self._x = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self._x = int(self.prompt_ids[self.np_random.integers(len(self.prompt_ids))])
        return self._x, {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        a = int(action)
        r = float(self.reward[self._x, a] + self.eta * self.log_ref[self._x, a])
        return self._x, r, True, False, {}


def _make_ppo(env: KLBanditEnv, log_ref: np.ndarray, eta: float, c: Any, seed: int) -> Any:
    from stable_baselines3 import PPO

    lr = c.learning_rate
    schedule = (lambda progress: lr * progress) if c.linear_decay else lr  # noqa: E731
    model = PPO("MlpPolicy", env, learning_rate=schedule, n_steps=c.n_steps,
                batch_size=c.batch_size, n_epochs=c.n_epochs, gamma=1.0, gae_lambda=1.0,
                ent_coef=eta, normalize_advantage=False, clip_range=c.clip_range,
                policy_kwargs={"net_arch": {"pi": [], "vf": []}}, seed=seed, device="cpu")
    with torch.no_grad():  # the actor's logits for one-hot x are column x: start at log pi0
        model.policy.action_net.weight.copy_(torch.as_tensor(log_ref.T, dtype=torch.float32))
        model.policy.action_net.bias.zero_()
    return model


def _log_probs(model: Any, n: int) -> np.ndarray:
    obs = torch.arange(n)
    with torch.no_grad():
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs.numpy())[0])
        return torch.log_softmax(dist.distribution.logits, -1).double().numpy()


def train_ppo_on_table(reward: np.ndarray, log_ref: np.ndarray, eta: float, *,
                       timesteps: int, config: Any = None, seed: int = 0,
                       prompt_ids: np.ndarray | None = None) -> np.ndarray:
    """SB3 PPO against a fixed reward table; returns log pi(a|x), shape ``(N, K)``."""
    c = (config or PPOConfig()).with_defaults(FINITE_DEFAULTS)
    env = KLBanditEnv(reward, log_ref, eta, prompt_ids)
    model = _make_ppo(env, log_ref, eta, c, seed)
    model.learn(total_timesteps=timesteps)
    return _log_probs(model, reward.shape[0])


# defaults that depend on the kind of env; a config's None means "this table's value"
FINITE_DEFAULTS = {"timesteps_per_iteration": 32768, "learning_rate": 0.5, "n_steps": 4096,
                   "batch_size": 4096, "n_epochs": 10}
LM_DEFAULTS = {"timesteps_per_iteration": 4096, "learning_rate": 3e-4, "n_steps": 32,
               "batch_size": 64, "n_epochs": 4}


@dataclasses.dataclass
class PPOConfig(AgentConfig):
    """SB3 PPO settings and the reward-model loop.

    ``iterations`` rounds of (query ``m`` pairs of the current policy, refit the BT reward
    model, ``timesteps_per_iteration`` PPO steps); ``m`` = the budget / iterations.
    ``timesteps_per_iteration``, ``learning_rate``, ``n_steps``, ``batch_size`` and
    ``n_epochs`` default (None) to :data:`FINITE_DEFAULTS` on finite envs and
    :data:`LM_DEFAULTS` on language envs (there a timestep is a token, ``n_steps`` is per
    parallel episode and there are ``n_envs`` of them). The finite defaults were chosen on
    LinearBT-v0 against a fixed reward: KL(PPO || Gibbs) fell from 0.29 (SB3-like
    settings: lr 0.05 constant, minibatches of 256) to 0.04-0.07 (these).

    Language envs only: ``kl_coef`` (None = the env's eta, the objective's own),
    ``kl_target`` (None = fixed coefficient; else Ziegler et al.'s adaptive controller),
    ``temperature`` (rollouts and loss alike), ``max_new_tokens`` (None = the policy's),
    ``max_prompt_tokens``, ``n_envs``, ``gae_lambda``, ``vf_coef``, ``max_grad_norm``,
    ``critic`` (``"detached"`` or ``"shared"``; see :class:`agents.ppo_lm.CausalLMActorCritic`).
    """

    iterations: int = 2
    timesteps_per_iteration: int | None = None
    learning_rate: float | None = None
    linear_decay: bool = True  # the learning rate falls linearly to 0 within each iteration
    n_steps: int | None = None
    batch_size: int | None = None  # finite: full-batch epochs, the tabular gradient is less noisy
    n_epochs: int | None = None
    clip_range: float = 0.2
    reward_model: str = "auto"
    kl_coef: float | None = None
    kl_target: float | None = None
    temperature: float = 1.0
    max_new_tokens: int | None = None
    max_prompt_tokens: int = 128
    n_envs: int = 16
    gae_lambda: float = 0.95
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    critic: str = "detached"

    def with_defaults(self, table: dict[str, Any]) -> PPOConfig:
        """A copy with the fields that are None taken from ``table``."""
        return dataclasses.replace(self, **{k: v for k, v in table.items()
                                             if getattr(self, k) is None})

    def resolved(self, env: Any) -> PPOConfig:
        """A copy with the None defaults filled in for ``env``'s kind."""
        return self.with_defaults(FINITE_DEFAULTS if is_finite(env) else LM_DEFAULTS)

    def validate(self, env: Any) -> None:
        super().validate(env)
        c = self.resolved(env)
        for name in ("iterations", "timesteps_per_iteration", "n_steps", "batch_size", "n_epochs",
                     "n_envs", "max_prompt_tokens"):
            v = getattr(c, name)
            check(isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
        check(c.learning_rate > 0, f"learning_rate must be > 0, got {c.learning_rate!r}")
        check(c.max_new_tokens is None or isinstance(c.max_new_tokens, int) and c.max_new_tokens >= 1,
              f"max_new_tokens must be an int >= 1 or None, got {c.max_new_tokens!r}")
        check(c.temperature > 0, f"temperature must be > 0, got {c.temperature!r}")
        check(c.kl_coef is None or c.kl_coef >= 0, f"kl_coef must be >= 0, got {c.kl_coef!r}")
        check(c.kl_target is None or c.kl_target > 0,
              f"kl_target must be > 0 or None, got {c.kl_target!r}")
        check(c.critic in ("detached", "shared"),
              f"critic must be 'detached' or 'shared', got {c.critic!r}")
        check(0 <= c.gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {c.gae_lambda!r}")
        has_data = env.offline_dataset is not None and len(env.offline_dataset) > 0
        check(has_data or env.queries_left >= self.iterations,
              "ppo fits its reward model on preference data: give the env offline data "
              "or a query budget")


@register_agent("ppo")
class PPOAgent(Agent):
    """SB3 PPO on the KL-regularized objective against a refitted BT reward model."""

    Config = PPOConfig
    description = ("PPO (stable-baselines3) against a BT reward model: r_hat + eta·log pi0 with "
                   "entropy eta on finite envs, token-level with a per-token KL penalty on LMs")

    def _query_pairs(self, venv: Any, m: int, data: PreferenceData, t: int) -> None:
        """m pairs of the current policy's samples, labelled through the env."""
        obs, _ = venv.reset(seed=self.seed_for(1, t))
        prompts = list(obs["prompt"])
        pairs = self.policy.sample(prompts, n=2, generator=self.generator(2, t))
        _, _, _, _, info = venv.step(([p[0] for p in pairs], [p[1] for p in pairs]))
        data.extend(prompts, info["final_info"]["chosen"], info["final_info"]["rejected"])
        self.queries_spent += m

    def learn(self, callback: Any = None, resume_from: Any = None) -> PPOAgent:
        c, u = self.config.resolved(self.u), self.u
        ds = u.offline_dataset
        data = PreferenceData.from_dataset(ds) if ds is not None else PreferenceData()
        m = u.queries_left // c.iterations
        venv = u.make_vec(m) if m else None
        if is_finite(u):
            log_ref = u.reference.log_probs_table().detach().double().numpy()
            env = KLBanditEnv(np.zeros_like(log_ref), log_ref, u.eta,
                              u.catalog.prompt_ids(list(u.train_prompts)))
            model = _make_ppo(env, log_ref, u.eta, c, self.seed_for(3))
            self.policy = TabularPolicy(u.catalog, torch.from_numpy(log_ref))
        else:
            from agents.ppo_lm import make_lm_ppo

            self.policy = u.reference.trainable_copy()
            model, envs = make_lm_ppo(self.policy, u.reference, list(u.train_prompts),
                                      kl_coef=u.eta if c.kl_coef is None else c.kl_coef,
                                      config=c, seed=self.seed_for(3))
        for t in tqdm(range(c.iterations), desc="ppo", disable=self.progress_disabled):
            if venv is not None:
                self._query_pairs(venv, m, data, t)
            rm = fit_reward_model(u, data, kind=c.reward_model, seed=c.seed)
            metrics = {"oracle/queries_used": u.queries_used, "train/pairs": len(data),
                       "train/iteration": t}
            if is_finite(u):
                env.reward = rm.table()
                model.learn(total_timesteps=c.timesteps_per_iteration, reset_num_timesteps=False)
                self.policy = TabularPolicy(u.catalog,
                                            torch.from_numpy(_log_probs(model, len(log_ref))))
            else:
                for e in envs:
                    e.reward_fn = rm
                model.learn(total_timesteps=c.timesteps_per_iteration, reset_num_timesteps=False)
                metrics.update({f"train/{k}": v for k, v in model.kl_stats.items()})
            self.global_step += 1
            self.logger.log(metrics, self.global_step)
            if callback is not None and callback(self, {"iteration": t, "pairs": len(data)}) is False:
                break
        self.logger.close()
        return self
