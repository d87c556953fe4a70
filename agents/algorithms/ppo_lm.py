"""Token-level PPO for language envs, on stable-baselines3's own ``PPO``.

The standard RLHF form (Ziegler et al. 2019; Ouyang et al. 2022), as an MDP SB3 can run:

* **State** the prompt's tokens and the response so far (:class:`TokenEnv`, a Gymnasium
  env: observation a fixed-width ``Box`` of token ids, left-padded with -1). **Action**
  the next token, ``Discrete(vocab)``. The episode ends at EOS or after
  ``max_new_tokens`` tokens.
* **Reward** per token t: ``-kl_coef·(log pi(a_t|s_t) - log pi0(a_t|s_t))``, plus the
  reward model's score of the whole response on the last token. Summed over an episode
  the penalty is ``-kl_coef·log(pi(y|x)/pi0(y|x))``, whose expectation is the
  sequence-level ``KL(pi(.|x) || pi0(.|x))``: with ``kl_coef = eta`` PPO maximises the
  env's objective ``E[r_hat] - eta·KL`` with the RM's r_hat for r*. The env pays only
  the score; :class:`KLPenalizedPPO` adds the penalty to SB3's rollout buffer after each
  rollout (log pi from the buffer's own rollout log-probs, log pi0 from one batched pass
  of the frozen reference over the buffer's states) and recomputes the GAE advantages.
  An optional adaptive controller (Ziegler et al. 2019, Sec. 2.2) moves ``kl_coef``
  towards a target KL; it changes the objective, so it is off by default.
* **Actor and critic** :class:`CausalLMActorCritic`: the causal LM's next-token
  distribution (logits / temperature, the same temperature in rollouts and in the
  loss) and a linear value head on its last hidden state, sharing the trunk. Dropout
  stays off in training too (the LM is kept in eval mode), so on the first minibatch
  of each update the PPO ratio is exactly the rollout's: 1.

Rollouts are batched over SB3's ``n_envs`` parallel episodes: one forward pass of the
LM per token for all of them. Each state is its full prefix (SB3's rollout loop keeps
no KV cache between steps), so a rollout costs about ``max_new_tokens`` times a
cached sampler's compute; fine for the tiny models and short responses this runs on
here, and the reason to keep ``max_new_tokens`` modest with large models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

__all__ = ["TokenEnv", "CausalLMActorCritic", "KLPenalizedPPO", "lm_inputs", "make_lm_ppo",
           "watch_first_minibatch_ratios"]

RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def lm_inputs(obs: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) for left-padded states (-1 = padding).

    Columns that are padding in every row are dropped first (states are padded to the
    longest possible prompt; a batch rarely needs that width).
    """
    obs = obs.long()
    keep = (obs >= 0).any(0).nonzero()
    obs = obs[:, int(keep[0]) if len(keep) else 0:]
    mask = (obs >= 0).long()
    ids = torch.where(mask.bool(), obs, torch.full_like(obs, pad_id))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


class TokenEnv(gym.Env):
    """One response, token by token: observe prompt + response so far, emit the next token.

    Args:
        prompts: the prompt texts episodes start from (drawn uniformly at reset).
        tokenizer: the policy's tokenizer (its ``decode`` turns response tokens into text).
        encode: ``text -> token ids`` as the policy encodes prompts.
        eos_id: the token that ends a response.
        vocab_size: size of the action space.
        max_new_tokens: response length cap (tokens, EOS included).
        max_prompt_tokens: prompts longer than this keep their last tokens.
        reward_fn: ``r(prompts, responses) -> array``, paid on the last token; settable.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, prompts: Sequence[str], tokenizer: Any, encode: Callable[[str], list[int]],
                 eos_id: int, vocab_size: int, max_new_tokens: int, max_prompt_tokens: int,
                 reward_fn: RewardFn | None = None) -> None:
        self.prompts = list(prompts)
        self.tokenizer = tokenizer
        self.eos_id = int(eos_id)
        self.max_new_tokens = int(max_new_tokens)
        self.width = int(max_prompt_tokens) + self.max_new_tokens
        self._enc = [encode(p)[-max_prompt_tokens:] for p in self.prompts]
        self.reward_fn = reward_fn
        self.observation_space = gym.spaces.Box(-1, vocab_size - 1, shape=(self.width,),
                                                dtype=np.int64)
        self.action_space = gym.spaces.Discrete(vocab_size)
        self._i, self._resp = 0, []

    def _obs(self) -> np.ndarray:
        seq = self._enc[self._i] + self._resp
        obs = np.full(self.width, -1, dtype=np.int64)
        obs[self.width - len(seq):] = seq
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._i, self._resp = int(self.np_random.integers(len(self.prompts))), []
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        self._resp.append(a)
        done = a == self.eos_id or len(self._resp) >= self.max_new_tokens
        reward, info = 0.0, {}
        if done:
            toks = self._resp[:-1] if a == self.eos_id else self._resp
            text = self.tokenizer.decode(toks, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            if self.reward_fn is not None:
                reward = float(np.asarray(self.reward_fn([self.prompts[self._i]], [text]))[0])
            info = {"prompt": self.prompts[self._i], "response": text, "score": reward}
        return self._obs(), reward, done, False, info


class CausalLMActorCritic(ActorCriticPolicy):
    """SB3 actor-critic over a causal LM: next-token logits / temperature, value head.

    Extra ``policy_kwargs``: ``lm`` (the causal LM, trained in place), ``pad_id``,
    ``temperature``, ``critic``:

    * ``"detached"`` (default): the value head reads the actor's last hidden state with
      the gradient stopped, so only the PPO policy loss moves the LM.
    * ``"shared"``: the value loss also trains the trunk (TRL's classic value head). On
      TinyInstruct-v0 at lr 3e-4 this drifted the policy outside PPO's clip (KL to pi0
      80 nats within two iterations, against 0.6 detached): the clip bounds the policy
      loss's step, not the value loss's.
    """

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any, *,
                 lm: nn.Module, pad_id: int, temperature: float = 1.0,
                 critic: str = "detached", **kwargs: Any) -> None:
        if critic not in ("detached", "shared"):
            raise ValueError(f"critic must be 'detached' or 'shared', got {critic!r}")
        self._pending = [lm]  # a list: nn.Module forbids module attributes before __init__
        self.pad_id, self.temperature, self.critic = int(pad_id), float(temperature), critic
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        self.lm = self._pending.pop()
        hidden = self.lm.get_output_embeddings().weight.shape[1]
        self.value_head = nn.Linear(hidden, 1).to(next(self.lm.parameters()).device)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),
                                              **self.optimizer_kwargs)

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.lm.eval()  # dropout off: rollout and loss see the same distribution

    def _heads(self, obs: torch.Tensor) -> tuple[Any, torch.Tensor]:
        ids, mask, pos = lm_inputs(obs, self.pad_id)
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=pos,
                      output_hidden_states=True, use_cache=False)
        logits = out.logits[:, -1].float() / self.temperature
        hidden = out.hidden_states[-1][:, -1].float()
        values = self.value_head(hidden.detach() if self.critic == "detached" else hidden)
        return self.action_dist.proba_distribution(action_logits=logits), values

    def forward(self, obs: torch.Tensor, deterministic: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist, values = self._heads(obs)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist, values = self._heads(obs)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: torch.Tensor) -> Any:
        return self._heads(obs)[0]

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self._heads(obs)[1]


class KLPenalizedPPO(PPO):
    """SB3 PPO whose rollout rewards get the per-token KL penalty to a frozen pi0.

    Extra arguments: ``ref_model`` (pi0's causal LM), ``kl_coef`` (eta),
    ``kl_target`` (None = fixed coefficient; else the adaptive controller's target
    KL per episode), ``kl_horizon`` (the controller's horizon in episodes),
    ``ref_batch_size``. ``kl_stats`` holds the last rollout's mean episode KL
    estimate, penalty and coefficient.
    """

    def __init__(self, *args: Any, ref_model: nn.Module, kl_coef: float,
                 kl_target: float | None = None, kl_horizon: int = 10000,
                 ref_batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ref_model, self.kl_coef = ref_model, float(kl_coef)
        self.kl_target, self.kl_horizon = kl_target, int(kl_horizon)
        self.ref_batch_size = int(ref_batch_size)
        self.kl_stats: dict[str, float] = {}

    @torch.no_grad()
    def _ref_log_probs(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        flat = torch.as_tensor(obs.reshape(-1, obs.shape[-1]))
        acts = torch.as_tensor(actions.reshape(-1)).long()
        dev = next(self.ref_model.parameters()).device
        temp, pad = self.policy.temperature, self.policy.pad_id
        out = []
        for i in range(0, len(flat), self.ref_batch_size):
            ids, mask, pos = (t.to(dev) for t in lm_inputs(flat[i:i + self.ref_batch_size], pad))
            logits = self.ref_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    use_cache=False).logits[:, -1].float() / temp
            lp = torch.log_softmax(logits, -1)
            out.append(lp.gather(-1, acts[i:i + self.ref_batch_size, None].to(dev))[:, 0])
        return torch.cat(out).cpu().numpy().reshape(actions.shape[:2])

    def collect_rollouts(self, env: Any, callback: Any, rollout_buffer: Any,
                         n_rollout_steps: int) -> bool:
        if not super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps):
            return False
        buf = rollout_buffer
        ref = self._ref_log_probs(buf.observations, buf.actions)
        log_ratio = buf.log_probs - ref  # log pi - log pi0 of each sampled token
        buf.rewards -= (self.kl_coef * log_ratio).astype(buf.rewards.dtype)
        with torch.no_grad():
            last = self.policy.predict_values(obs_as_tensor(self._last_obs, self.device))
        buf.compute_returns_and_advantage(last_values=last, dones=self._last_episode_starts)
        episodes = max(1.0, float(buf.episode_starts.sum()))
        kl = float(log_ratio.sum()) / episodes
        self.kl_stats = {"kl": kl, "kl_coef": self.kl_coef,
                         "kl_penalty": self.kl_coef * kl}
        for k, v in self.kl_stats.items():
            self.logger.record(f"rollout/{k}", v)
        if self.kl_target is not None:  # Ziegler et al. (2019), Sec. 2.2
            err = float(np.clip(kl / self.kl_target - 1.0, -0.2, 0.2))
            self.kl_coef *= 1.0 + err * episodes / self.kl_horizon
        return True


def make_lm_ppo(policy: Any, ref: Any, prompts: Sequence[str], *, kl_coef: float,
                config: Any, seed: int) -> tuple[Any, list[TokenEnv]]:
    """SB3 PPO over ``policy`` (a trainable :class:`CausalLMPolicy`, trained in place).

    Returns the model and its envs (set each env's ``reward_fn`` before ``learn``).
    """
    c = config
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    envs = [TokenEnv(prompts, policy.tokenizer, lambda t: policy.encode(t) or [policy.bos_id],
                     policy.eos_id, vocab, c.max_new_tokens or policy.max_new_tokens,
                     c.max_prompt_tokens) for _ in range(c.n_envs)]
    venv = DummyVecEnv([(lambda e=e: e) for e in envs])
    venv.seed(seed)
    lr = c.learning_rate
    schedule = (lambda progress: lr * progress) if c.linear_decay else lr  # noqa: E731
    model = KLPenalizedPPO(
        CausalLMActorCritic, venv, learning_rate=schedule, n_steps=c.n_steps,
        batch_size=c.batch_size, n_epochs=c.n_epochs, gamma=1.0, gae_lambda=c.gae_lambda,
        clip_range=c.clip_range, ent_coef=0.0, vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm,
        normalize_advantage=True, seed=seed, device=policy.device,
        policy_kwargs={"lm": policy.model, "pad_id": policy.pad_id,
                       "temperature": c.temperature, "critic": c.critic},
        ref_model=ref.model, kl_coef=kl_coef, kl_target=c.kl_target)
    return model, envs


def watch_first_minibatch_ratios(model: Any) -> list[torch.Tensor]:
    """Record pi_new / pi_old on the first minibatch of every update of an SB3 PPO ``model``.

    A diagnostic: with the rollout's distribution reproduced exactly in training (dropout
    off, the same temperature and inputs), each recorded ratio is 1. Returns the list that
    the following ``learn`` calls fill, one tensor per update.
    """
    state: dict[str, Any] = {"armed": False, "old": None}
    ratios: list[torch.Tensor] = []
    train, get, evaluate = model.train, model.rollout_buffer.get, model.policy.evaluate_actions

    def watched_train() -> None:
        state["armed"] = True
        train()

    def watched_get(batch_size: int | None = None) -> Any:
        for i, batch in enumerate(get(batch_size)):
            if i == 0:
                state["old"] = batch.old_log_prob
            yield batch

    def watched_evaluate(obs: torch.Tensor, actions: torch.Tensor) -> Any:
        values, log_prob, entropy = evaluate(obs, actions)
        if state["armed"]:
            ratios.append(torch.exp(log_prob.detach() - state["old"]))
            state["armed"] = False
        return values, log_prob, entropy

    model.train, model.rollout_buffer.get = watched_train, watched_get
    model.policy.evaluate_actions = watched_evaluate
    return ratios
