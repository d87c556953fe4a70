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

PPO does not resume from a checkpoint (SB3's optimiser and value head are not
checkpointed): ``resumable = False``. A zoo run that is resumed starts PPO again,
and the labels it already paid for are answered from the run's ledger.

On language envs the same agent runs the token-level PPO of :mod:`agents.algorithms.ppo_lm`
(one action per token, the per-token KL penalty to pi0 plus the RM's score at the
end, an actor-critic over the causal LM with a value head).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.base import AgentConfig, LoraConfig, check, check_language_only, register_agent
from agents.collect import check_budget
from agents.data import PreferenceData
from agents.loop import Agent
from agents.reward_models import RewardModelConfig, fit_reward_model
from rlhf_env.policies import TabularPolicy

__all__ = ["KLBanditEnv", "PPOConfig", "PPOAgent", "train_ppo_on_table", "CRITICS", "ROLLOUTS"]

CRITICS = ("detached", "shared")
ROLLOUTS = ("auto", "cached", "per_state")


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
        self.prompt = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.prompt = int(self.prompt_ids[self.np_random.integers(len(self.prompt_ids))])
        return self.prompt, {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        a = int(action)
        r = float(self.reward[self.prompt, a] + self.eta * self.log_ref[self.prompt, a])
        return self.prompt, r, True, False, {}


def make_table_ppo(env: KLBanditEnv, log_ref: np.ndarray, eta: float, c: PPOConfig,
                   seed: int) -> Any:
    """SB3 PPO with a tabular actor initialised at log pi0 and entropy coefficient eta."""
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
    return silent_logger(model)


def silent_logger(model: Any) -> Any:
    """Give an SB3 model a logger that writes nowhere: without one, every ``learn()`` with
    no ``tensorboard_log`` makes an empty ``SB3-<date>`` folder in the temp dir (SB3's
    ``configure(folder=None)``); the agent logs through its own RunLogger instead."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def table_log_probs(model: Any, n: int) -> np.ndarray:
    """log pi(a|x) of an SB3 tabular actor for prompts 0..n-1, ``(n, K)``."""
    obs = torch.arange(n)
    with torch.no_grad():
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs.numpy())[0])
        return torch.log_softmax(dist.distribution.logits, -1).double().numpy()


def train_ppo_on_table(reward: np.ndarray, log_ref: np.ndarray, eta: float, *,
                       timesteps: int, config: PPOConfig, seed: int = 0,
                       prompt_ids: np.ndarray | None = None) -> np.ndarray:
    """SB3 PPO against a fixed reward table; returns log pi(a|x), shape ``(N, K)``."""
    env = KLBanditEnv(reward, log_ref, eta, prompt_ids)
    model = make_table_ppo(env, log_ref, eta, config, seed)
    model.learn(total_timesteps=timesteps)
    return table_log_probs(model, reward.shape[0])


@dataclasses.dataclass
class PPOConfig(AgentConfig):
    """SB3 PPO settings (SB3's names) and the reward-model loop.

    ``iterations`` rounds of (query m pairs of the current policy, refit the BT reward
    model, ``timesteps_per_iteration`` PPO steps); m = the query budget / iterations. On
    language envs a timestep is a token, ``n_steps`` is per parallel episode and there are
    ``n_envs`` of them. The defaults here are the language-model ones; the ``exact`` entry
    of ``zoo_configs/ppo.yml`` holds those of exact envs (chosen on LinearBT-v0 against a
    fixed reward: KL(PPO || Gibbs) fell from 0.29 with SB3-like settings, lr 0.05 constant
    and minibatches of 256, to 0.04-0.07).

    Language envs only: ``kl_coef`` (None = the env's eta, the objective's own),
    ``kl_target`` (None = fixed coefficient; else Ziegler et al.'s adaptive controller),
    ``temperature`` (rollouts and loss alike), ``max_new_tokens`` (None = the policy's),
    ``max_prompt_tokens``, ``n_envs``, ``gae_lambda``, ``vf_coef``, ``max_grad_norm``,
    ``critic`` (``"detached"`` or ``"shared"``; see
    :class:`agents.algorithms.ppo_lm.CausalLMActorCritic`), ``rollout`` (``"cached"``: one
    forward pass per sequence, a KV cache in rollouts and one teacher-forced pass per
    segment in updates; ``"per_state"``: every state encoded from scratch, about
    ``max_new_tokens`` times the compute; the same transitions and loss, see
    :mod:`agents.algorithms.ppo_lm`; ``"auto"``, the default: cached where the model's KV
    cache allows it — not sliding-window caches (Mistral with ``sliding_window``, Gemma
    2/3) — else per_state; ``"cached"`` on such a model is refused before anything is
    paid), ``lora`` (train a LoRA adapter over pi0's weights; pi0 = the adapter disabled),
    ``gradient_checkpointing``.
    """

    iterations: int = 2
    timesteps_per_iteration: int = 4096
    learning_rate: float = 3e-4
    linear_decay: bool = True  # the learning rate falls linearly to 0 within each iteration
    n_steps: int = 32
    batch_size: int = 64
    n_epochs: int = 4
    clip_range: float = 0.2
    reward_model: RewardModelConfig = dataclasses.field(default_factory=RewardModelConfig)
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
    rollout: str = "auto"
    lora: LoraConfig | None = None
    gradient_checkpointing: bool = False

    def check(self) -> None:
        super().check()
        for name in ("iterations", "timesteps_per_iteration", "n_steps", "batch_size", "n_epochs",
                     "n_envs", "max_prompt_tokens"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)!r}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        check(self.max_new_tokens is None or self.max_new_tokens >= 1,
              f"max_new_tokens must be an int >= 1 or None, got {self.max_new_tokens!r}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature!r}")
        check(0 < self.clip_range, f"clip_range must be > 0, got {self.clip_range!r}")
        check(self.kl_coef is None or self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef!r}")
        check(self.kl_target is None or self.kl_target > 0,
              f"kl_target must be > 0 or None, got {self.kl_target!r}")
        check(self.critic in CRITICS, f"critic must be one of {CRITICS}, got {self.critic!r}")
        check(self.rollout in ROLLOUTS, f"rollout must be one of {ROLLOUTS}, got {self.rollout!r}")
        check(0 <= self.gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {self.gae_lambda!r}")
        check(self.vf_coef >= 0 and self.max_grad_norm > 0, "vf_coef >= 0 and max_grad_norm > 0")

    def per_round(self, instance: Any) -> int:
        return instance.query_budget // self.iterations

    def check_env(self, instance: Any) -> None:
        self.reward_model.resolved_kind(instance)
        check_language_only(instance, "ppo", lora=self.lora,
                            gradient_checkpointing=self.gradient_checkpointing)
        m = self.per_round(instance)
        has_data = instance.offline_dataset is not None and len(instance.offline_dataset) > 0
        check(has_data or m > 0, "ppo fits its reward model on preference data: give the env "
                                 "offline data or a query budget of at least `iterations`")
        if m:
            check_budget("ppo", self.iterations, m, instance)


@register_agent("ppo")
class PPOAgent(Agent):
    """SB3 PPO on the KL-regularized objective against a refitted BT reward model."""

    Config = PPOConfig
    description = ("PPO (stable-baselines3) against a BT reward model: r_hat + eta·log pi0 with "
                   "entropy eta on exact envs, token-level with a per-token KL penalty on LMs")
    resumable = False
    relative_cost = 10.0  # CPU, 2026-11-26: 12 s a run on LinearBT-v0 where the others take <= 2 s

    def n_rounds(self) -> int:
        return self.config.iterations

    def validate(self) -> None:
        """On language envs, resolve ``rollout`` against pi0's KV cache before paying."""
        c, inst = self.config, self.instance
        self.rollout = c.rollout
        if inst.exact:
            return
        from agents.algorithms.ppo_lm import cached_rollout_supported
        from rlhf_env.policies.causal_lm import CausalLMPolicy

        check(isinstance(inst.reference, CausalLMPolicy),
              f"ppo on a language env trains a causal LM; {inst.name}'s pi0 is a "
              f"{type(inst.reference).__name__}")
        check(inst.reference.backend == "hf",
              f"ppo on language models samples token by token with the HF model (SB3's "
              f"rollout buffer holds each step), so it runs on backend='hf'; {inst.name}'s pi0 "
              f"uses backend={inst.reference.backend!r}: make the env with backend='hf' for ppo")
        if c.rollout == "per_state":
            return
        editable = cached_rollout_supported(inst.reference)
        check(editable or c.rollout == "auto",
              f"rollout='cached' edits the KV cache row by row, and this model's cache "
              f"({type(inst.reference.model).__name__}: sliding-window layers) does not allow "
              "it: use rollout='per_state' or 'auto'")
        self.rollout = "cached" if editable else "per_state"

    def setup(self) -> None:
        c, inst = self.config, self.instance
        self.m = c.per_round(inst)
        if inst.exact:
            self.log_ref = inst.reference.log_probs_table().detach().double().numpy()
            self.bandit = KLBanditEnv(np.zeros_like(self.log_ref), self.log_ref, inst.eta,
                                      inst.catalog.prompt_ids(list(inst.train_prompts)))
            self.model = make_table_ppo(self.bandit, self.log_ref, inst.eta, c, self.seed_for(3))
            self.policy = TabularPolicy(inst.catalog, torch.from_numpy(self.log_ref))
        else:
            from agents.algorithms.ppo_lm import make_lm_ppo

            self.policy = inst.reference.trainable_copy(
                lora=None if c.lora is None else c.lora.settings(), seed=self.seed_for(11))
            if c.gradient_checkpointing:
                self.policy.set_gradient_checkpointing(True)
            self.model, self.token_envs = make_lm_ppo(
                self.policy, inst.reference, list(inst.train_prompts),
                kl_coef=inst.eta if c.kl_coef is None else c.kl_coef, config=c,
                seed=self.seed_for(3), rollout=self.rollout)

    def collect(self, t: int) -> PreferenceData | None:
        if not self.m:
            return None
        gen, policy = self.generator(2, t), self.policy

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            pairs = policy.sample(prompts, n=2, generator=gen)
            return [p[0] for p in pairs], [p[1] for p in pairs]

        return self.collector.pairs(self.m, self.seed_for(1, t), propose)

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        c, inst = self.config, self.instance
        rm = self.reward_model = fit_reward_model(inst, self.offline + self.data, c.reward_model,
                                                  seed=c.seed)
        metrics: dict[str, float] = {}
        if inst.exact:
            self.bandit.reward = rm.table()
            self.model.learn(total_timesteps=c.timesteps_per_iteration, reset_num_timesteps=False)
            self.policy = TabularPolicy(inst.catalog, torch.from_numpy(
                table_log_probs(self.model, len(self.log_ref))))
        else:
            for e in self.token_envs:
                e.reward_fn = rm
            self.model.learn(total_timesteps=c.timesteps_per_iteration, reset_num_timesteps=False)
            metrics.update({f"train/{k}": v for k, v in self.model.kl_stats.items()})
        self.global_step = self.model.num_timesteps // (self.model.n_steps * self.model.n_envs)
        return metrics
