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
  rollout (log pi from the buffer's own rollout log-probs, log pi0 from batched passes
  of the frozen reference over the buffer's states) and recomputes the GAE advantages.
  An optional adaptive controller (Ziegler et al. 2019, Sec. 2.2) moves ``kl_coef``
  towards a target KL; it changes the objective, so it is off by default.
* **Actor and critic** :class:`CausalLMActorCritic`: the causal LM's next-token
  distribution (logits / temperature, the same temperature in rollouts and in the
  loss) and a linear value head on its last hidden state, sharing the trunk. Dropout
  stays off in training too (the LM is kept in eval mode), so on the first minibatch
  of each update the PPO ratio is exactly the rollout's: 1.

Two ways to compute the same rollouts and updates (the hyperparameter ``rollout``):

* ``"cached"`` (default): one forward pass per sequence (:mod:`agents.algorithms.ppo_lm_cache`).
  SB3's rollout loop runs unchanged while the actor keeps a KV cache across its steps
  (each token one decoding step, each prompt one encoding); pi0's log-probs come from one
  teacher-forced pass over each finished segment; PPO's update, SB3's ``train`` unchanged,
  gets minibatches of whole segments and evaluates each in one forward pass. The same
  transitions, advantages and per-token loss as ``"per_state"``, to float rounding.
* ``"per_state"``: every state is its full prefix, encoded from scratch, in the rollout
  (one forward pass per step for the ``n_envs`` episodes), for pi0 and in every epoch:
  about ``L`` passes for a response of ``L`` tokens. Kept as the reference the tests hold
  the cached path to, and for models whose KV cache the cached path cannot edit (anything
  but a plain ``DynamicCache``, e.g. sliding-window attention).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from agents.algorithms.ppo_lm_cache import (
    KVCacheStepper,
    SequenceRolloutBuffer,
    lm_inputs,
    prefix_runs,
    run_outputs,
)

__all__ = ["TokenEnv", "CausalLMActorCritic", "KLPenalizedPPO", "lm_inputs", "make_lm_ppo",
           "cached_rollout_supported", "watch_first_minibatch_ratios"]

RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


class TokenEnv(gym.Env):
    """One response, token by token: observe prompt + response so far, emit the next token.

    Args:
        prompts: the prompt texts episodes start from (drawn uniformly at reset).
        tokenizer: the policy's tokenizer (its ``decode`` turns response tokens into text).
        encode: ``text -> token ids`` as the policy encodes prompts (cut to fit, keeping the
            head: :meth:`~rlhf_env.policies.CausalLMPolicy.prompt_ids`).
        eos_id: the token that ends a response; ``stop_ids`` all of them (default: eos_id).
        vocab_size: size of the action space.
        max_new_tokens: response length cap (tokens, the stop token included).
        max_prompt_tokens: prompts still longer than this keep their last tokens.
        reward_fn: ``r(prompts, responses) -> array``; settable. Called on each episode's
            last token, unless ``defer_scores`` is set: then finished episodes are recorded
            in :attr:`finished` (``(step index, prompt, response)``, the step counted from
            :meth:`start_rollout`) and scored together after the rollout
            (:class:`KLPenalizedPPO` does), the reward of the last token being 0 until then.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, prompts: Sequence[str], tokenizer: Any, encode: Callable[[str], list[int]],
                 eos_id: int, vocab_size: int, max_new_tokens: int, max_prompt_tokens: int,
                 reward_fn: RewardFn | None = None, stop_ids: Sequence[int] | None = None) -> None:
        self.prompts = list(prompts)
        self.tokenizer = tokenizer
        self.eos_id = int(eos_id)
        self.stop_ids = frozenset(int(i) for i in (stop_ids or (eos_id,)))
        self.max_new_tokens = int(max_new_tokens)
        self.width = int(max_prompt_tokens) + self.max_new_tokens
        self._enc = [encode(p)[-max_prompt_tokens:] for p in self.prompts]
        self.reward_fn = reward_fn
        self.defer_scores = False
        self.finished: list[tuple[int, str, str]] = []
        self._t = 0
        self.observation_space = gym.spaces.Box(-1, vocab_size - 1, shape=(self.width,),
                                                dtype=np.int64)
        self.action_space = gym.spaces.Discrete(vocab_size)
        self._i, self._resp = 0, []

    def start_rollout(self) -> None:
        """Count steps from 0 and forget the finished episodes recorded so far."""
        self._t, self.finished = 0, []

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
        t, self._t = self._t, self._t + 1
        done = a in self.stop_ids or len(self._resp) >= self.max_new_tokens
        reward, info = 0.0, {}
        if done:
            toks = self._resp[:-1] if a in self.stop_ids else self._resp
            text = self.tokenizer.decode(toks, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            prompt = self.prompts[self._i]
            if self.defer_scores:
                self.finished.append((t, prompt, text))
            elif self.reward_fn is not None:
                reward = float(np.asarray(self.reward_fn([prompt], [text]))[0])
            info = {"prompt": prompt, "response": text, "score": reward}
        return self._obs(), reward, done, False, info


class CausalLMActorCritic(ActorCriticPolicy):
    """SB3 actor-critic over a causal LM: next-token logits / temperature, value head.

    Extra ``policy_kwargs``: ``lm`` (the causal LM, trained in place), ``pad_id``,
    ``temperature``, ``critic``, ``rollout``:

    * ``critic="detached"`` (default): the value head reads the actor's last hidden state
      with the gradient stopped, so only the PPO policy loss moves the LM.
    * ``critic="shared"``: the value loss also trains the trunk (TRL's classic value head).
      On TinyInstruct-v0 at lr 3e-4 this drifted the policy outside PPO's clip (KL to pi0
      80 nats within two iterations, against 0.6 detached): the clip bounds the policy
      loss's step, not the value loss's.
    * ``rollout="cached"`` (default): inside :meth:`cached_rollout`, ``forward`` keeps a
      KV cache across calls (:class:`~agents.algorithms.ppo_lm_cache.KVCacheStepper`), and
      ``evaluate_actions`` evaluates each run of consecutive states of one sequence in one
      forward pass (:func:`~agents.algorithms.ppo_lm_cache.run_outputs`).
      ``rollout="per_state"``: every call encodes every state from scratch.

    Overrides of SB3's ``ActorCriticPolicy``: ``_build`` (the LM and value head instead of
    an MLP), ``set_training_mode`` (the LM stays in eval mode), ``forward`` (rollout
    actions, values, log-probs), ``evaluate_actions`` (the update's), ``get_distribution``
    (per state: SB3's ``predict``) and ``predict_values`` (the rollout's bootstrap value;
    cached within :meth:`cached_rollout`).
    """

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any, *,
                 lm: nn.Module, pad_id: int, temperature: float = 1.0,
                 critic: str = "detached", rollout: str = "cached",
                 gradient_checkpointing: bool = False, **kwargs: Any) -> None:
        if critic not in ("detached", "shared"):
            raise ValueError(f"critic must be 'detached' or 'shared', got {critic!r}")
        if rollout not in ("cached", "per_state"):
            raise ValueError(f"rollout must be 'cached' or 'per_state', got {rollout!r}")
        self._pending = [lm]  # a list: nn.Module forbids module attributes before __init__
        self.pad_id, self.temperature, self.critic = int(pad_id), float(temperature), critic
        self.rollout, self.stepper = rollout, None
        self.gradient_checkpointing = bool(gradient_checkpointing)
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
        # dropout off: rollout and loss see the same distribution (gradient checkpointing
        # needs train mode; its model has had its dropout set to 0)
        self.lm.train(mode and self.gradient_checkpointing)

    @contextlib.contextmanager
    def cached_rollout(self) -> Iterator[None]:
        """Within: ``forward`` and ``predict_values`` reuse one KV cache across calls.

        A no-op when ``rollout="per_state"``. The cache is dropped on exit, as it is only
        valid while the weights stay unchanged.
        """
        if self.rollout == "cached":
            self.stepper = KVCacheStepper(self.lm, self.pad_id)
        try:
            yield
        finally:
            self.stepper = None

    def _dist_and_values(self, logits: torch.Tensor, hidden: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The action distribution of next-token ``logits`` (b, V) and the values (b, 1)."""
        logits, hidden = logits.float() / self.temperature, hidden.float()
        values = self.value_head(hidden.detach() if self.critic == "detached" else hidden)
        return self.action_dist.proba_distribution(action_logits=logits), values

    def _heads(self, obs: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Distribution and values of each state, one forward pass of its whole prefix."""
        ids, mask, pos = lm_inputs(obs, self.pad_id)
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=pos,
                      output_hidden_states=True, use_cache=False)
        return self._dist_and_values(out.logits[:, -1], out.hidden_states[-1][:, -1])

    def forward(self, obs: torch.Tensor, deterministic: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist, values = (self._dist_and_values(*self.stepper(obs)) if self.stepper is not None
                        else self._heads(obs))
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.rollout == "cached":
            dist, values = self._dist_and_values(*run_outputs(self.lm, obs, actions, self.pad_id))
        else:
            dist, values = self._heads(obs)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: torch.Tensor) -> Any:
        return self._heads(obs)[0]

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        if self.stepper is not None:  # the rollout's bootstrap value: one cached step
            return self._dist_and_values(*self.stepper(obs))[1]
        return self._heads(obs)[1]


class KLPenalizedPPO(PPO):
    """SB3's PPO on the token MDP, with the per-token KL penalty to a frozen pi0 in its rewards.

    Reference implementation: stable-baselines3 2.x ``PPO``; the KL-penalised token
    reward of Ziegler et al. (2019) and Ouyang et al. (2022).

    Overrides one SB3 method, ``collect_rollouts``: it runs SB3's own loop, then subtracts
    ``kl_coef·(log pi - log pi0)`` from the buffer's rewards (:meth:`apply_kl_penalty`) and
    recomputes SB3's GAE, both inside ``policy.cached_rollout()`` (on the cached path the
    actor keeps a KV cache across the loop's steps and the bootstrap value). SB3's ``train``
    runs unchanged; the cached path's one-pass-per-sequence update comes from the buffer
    class (:class:`~agents.algorithms.ppo_lm_cache.SequenceRolloutBuffer`, minibatches of
    whole segments) and the actor's ``evaluate_actions``.

    **Scores in one call.** The :class:`TokenEnv` s record their finished episodes instead
    of scoring each as it ends (``defer_scores``); after SB3's loop every episode that
    finished in the rollout is scored by one call of the reward model per distinct
    ``reward_fn`` (batched inside the RM), and the score is added to the reward of the
    episode's last token before the KL penalty and GAE.

    Extra arguments: ``ref_model`` (pi0's causal LM), ``kl_coef`` (eta),
    ``kl_target`` (None = fixed coefficient; else the adaptive controller's target
    KL per episode), ``kl_horizon`` (the controller's horizon in episodes),
    ``ref_batch_size`` (states, or on the cached path segments, per pass of pi0),
    ``activate_policy`` / ``activate_reference`` (called before the actor's and pi0's
    passes: a LoRA policy and pi0 share one base model, whose adapter slot each points to
    itself; :meth:`~rlhf_env.policies.CausalLMPolicy.activate`).
    ``kl_stats`` holds the last rollout's mean episode KL estimate, penalty and coefficient.
    """

    def __init__(self, *args: Any, ref_model: nn.Module, kl_coef: float,
                 kl_target: float | None = None, kl_horizon: int = 10000,
                 ref_batch_size: int = 64, activate_policy: Callable[[], None] | None = None,
                 activate_reference: Callable[[], None] | None = None, **kwargs: Any) -> None:
        self.activate_policy = activate_policy or (lambda: None)
        self.activate_reference = activate_reference or (lambda: None)
        self.activate_policy()  # the optimiser SB3 builds takes the slot's current tensors
        super().__init__(*args, **kwargs)
        self.ref_model, self.kl_coef = ref_model, float(kl_coef)
        self.kl_target, self.kl_horizon = kl_target, int(kl_horizon)
        self.ref_batch_size = int(ref_batch_size)
        self.kl_stats: dict[str, float] = {}
        self.score_calls = 0  # reward-model calls made, for the record
        for e in self.token_envs:
            e.defer_scores = True

    @property
    def token_envs(self) -> list[TokenEnv]:
        """The :class:`TokenEnv` s behind SB3's vector env (DummyVecEnv)."""
        return [e for e in getattr(self.env, "envs", []) if isinstance(e, TokenEnv)]

    def add_scores(self, buf: Any) -> int:
        """Score every episode that finished in the rollout (one RM call per distinct
        ``reward_fn``) and add each score to its last token's reward; returns how many."""
        groups: dict[int, tuple[Any, list[tuple[int, int, str, str]]]] = {}
        for k, e in enumerate(self.token_envs):
            if e.reward_fn is None:
                continue
            groups.setdefault(id(e.reward_fn), (e.reward_fn, []))[1].extend(
                (t, k, p, r) for t, p, r in e.finished)
        n = 0
        for fn, items in groups.values():
            if not items:
                continue
            scores = np.asarray(fn([p for _, _, p, _ in items], [r for _, _, _, r in items]),
                                dtype=np.float64)
            self.score_calls += 1
            for (t, k, _, _), score in zip(items, scores):
                buf.rewards[t, k] += score
            n += len(items)
        return n

    @torch.no_grad()
    def reference_log_probs(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """log pi0(a_t|s_t) of a rollout buffer's ``(steps, envs, ...)`` states and actions.

        Returns a ``(steps, envs)`` array (nats, at the actor's temperature). Per state on
        the per-state path; on the cached path one teacher-forced pass per segment.
        """
        steps, envs, width = observations.shape
        self.activate_reference()
        cached = self.policy.rollout == "cached"
        if cached:  # env-major, so that each env's segments are runs of consecutive rows
            observations, actions = observations.swapaxes(0, 1), actions.swapaxes(0, 1)
        dev = next(self.ref_model.parameters()).device
        obs = torch.as_tensor(observations.reshape(-1, width)).to(dev)
        acts = torch.as_tensor(actions.reshape(-1)).long().to(dev)
        run = prefix_runs(obs, acts)[0] if cached else torch.arange(len(obs), device=dev)
        out = []
        for first in range(0, int(run[-1]) + 1, self.ref_batch_size):
            lo, hi = (int(i) for i in torch.searchsorted(run, torch.tensor(
                [first, first + self.ref_batch_size], device=dev)))
            if cached:
                logits = run_outputs(self.ref_model, obs[lo:hi], acts[lo:hi], self.policy.pad_id)[0]
            else:
                ids, mask, pos = lm_inputs(obs[lo:hi], self.policy.pad_id)
                logits = self.ref_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                        use_cache=False).logits[:, -1]
            lp = torch.log_softmax(logits.float() / self.policy.temperature, -1)
            out.append(lp.gather(-1, acts[lo:hi, None])[:, 0])
        lp = torch.cat(out).cpu().numpy()
        self.activate_policy()
        return lp.reshape(envs, steps).T if cached else lp.reshape(steps, envs)

    def apply_kl_penalty(self, buf: Any) -> dict[str, float]:
        """Subtract ``kl_coef·(log pi - log pi0)`` from each token's reward, redo GAE.

        ``buf`` is the rollout buffer SB3 just filled (its ``log_probs`` are the rollout's
        log pi). Returns and logs ``kl_stats``, then moves ``kl_coef`` if adaptive.
        """
        log_ratio = buf.log_probs - self.reference_log_probs(buf.observations, buf.actions)
        buf.rewards -= (self.kl_coef * log_ratio).astype(buf.rewards.dtype)
        with torch.no_grad():
            last = self.policy.predict_values(obs_as_tensor(self._last_obs, self.device))
        buf.compute_returns_and_advantage(last_values=last, dones=self._last_episode_starts)
        episodes = max(1.0, float(buf.episode_starts.sum()))
        kl = float(log_ratio.sum()) / episodes
        self.kl_stats = {"kl": kl, "kl_coef": self.kl_coef, "kl_penalty": self.kl_coef * kl}
        for k, v in self.kl_stats.items():
            self.logger.record(f"rollout/{k}", v)
        if self.kl_target is not None:  # Ziegler et al. (2019), Sec. 2.2
            err = float(np.clip(kl / self.kl_target - 1.0, -0.2, 0.2))
            self.kl_coef *= 1.0 + err * episodes / self.kl_horizon
        return self.kl_stats

    def collect_rollouts(self, env: Any, callback: Any, rollout_buffer: Any,
                         n_rollout_steps: int) -> bool:
        self.activate_policy()
        for e in self.token_envs:
            e.start_rollout()
        with self.policy.cached_rollout():
            if not super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps):
                return False
            self.add_scores(rollout_buffer)
            self.apply_kl_penalty(rollout_buffer)
        return True

    def train(self) -> None:
        self.activate_policy()
        super().train()


def cached_rollout_supported(policy: Any) -> bool:
    """Whether the cached rollout can edit this policy's KV cache (a plain
    ``DynamicCache``; not sliding-window caches), probed with one two-token forward pass."""
    from agents.algorithms.ppo_lm_cache import cache_is_editable

    policy.activate()
    ids = torch.tensor([[policy.bos_id, policy.bos_id]], device=policy.device)
    with torch.no_grad():
        out = policy.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    return cache_is_editable(getattr(out, "cache", None) or out.past_key_values)


def make_lm_ppo(policy: Any, ref: Any, prompts: Sequence[str], *, kl_coef: float,
                config: Any, seed: int, rollout: str | None = None) -> tuple[Any, list[TokenEnv]]:
    """SB3 PPO over ``policy`` (a trainable :class:`CausalLMPolicy`, trained in place; a LoRA
    policy trains its adapter, pi0 being the same base with the adapter disabled).

    ``rollout`` (default ``config.rollout``): ``"auto"`` takes ``"cached"`` where the model's
    KV cache allows it (:func:`cached_rollout_supported`), else ``"per_state"``.
    Returns the model and its envs (set each env's ``reward_fn`` before ``learn``).
    """
    c = config
    rollout = c.rollout if rollout is None else rollout
    if rollout == "auto":
        rollout = "cached" if cached_rollout_supported(policy) else "per_state"
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    envs = [TokenEnv(prompts, policy.tokenizer,
                     lambda t: policy.prompt_ids(t, c.max_prompt_tokens),
                     policy.eos_id, vocab, c.max_new_tokens or policy.max_new_tokens,
                     c.max_prompt_tokens, stop_ids=policy.stop_ids) for _ in range(c.n_envs)]
    venv = DummyVecEnv([(lambda e=e: e) for e in envs])
    venv.seed(seed)
    lr = c.learning_rate
    schedule = (lambda progress: lr * progress) if c.linear_decay else lr  # noqa: E731
    model = KLPenalizedPPO(
        CausalLMActorCritic, venv, learning_rate=schedule, n_steps=c.n_steps,
        rollout_buffer_class=SequenceRolloutBuffer if rollout == "cached" else None,
        batch_size=c.batch_size, n_epochs=c.n_epochs, gamma=1.0, gae_lambda=c.gae_lambda,
        clip_range=c.clip_range, ent_coef=0.0, vf_coef=c.vf_coef, max_grad_norm=c.max_grad_norm,
        normalize_advantage=True, seed=seed, device=policy.device,
        policy_kwargs={"lm": policy.model, "pad_id": policy.pad_id,
                       "temperature": c.temperature, "critic": c.critic,
                       "rollout": rollout,
                       "gradient_checkpointing": getattr(policy, "gradient_checkpointing", False)},
        ref_model=ref.model, kl_coef=kl_coef, kl_target=c.kl_target,
        activate_policy=getattr(policy, "activate", None),
        activate_reference=getattr(ref, "activate", None))
    from agents.algorithms.ppo import silent_logger

    return silent_logger(model), envs


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
