"""Bradley-Terry reward models fitted on the preference data an agent has.

:func:`fit_reward_model` fits the model :class:`RewardModelConfig` names; ``"auto"``
picks by the env's declared kind:

* ``"linear"`` (linear envs, whose features phi are public): r(x, a) =
  <theta, phi(x, a)> with theta the ridge-regularised MLE, found by Newton's
  method on the convex BT log-likelihood (Xiong et al. 2024, Eq. (5)). It also
  keeps Sigma = lambda I + sum_i (phi_c - phi_r)(phi_c - phi_r)^T, the design
  matrix the paper's confidence bounds use.
* ``"tabular"`` (exact envs without features): one free reward per
  (prompt, response), ridge-regularised BT.
* ``"neural"`` (sampled envs): a sequence-classification RM trained with the BT loss
  (:func:`rlhf_env.lm.reward_model.train_bt`). Its ``backbone``: ``"policy"`` (the
  default, as TRL's reward trainer: pi0's architecture, tokenizer and weights with a
  fresh score head, reading pi0's token ids — its chat template included — on pi0's
  device), ``"tiny"`` (a 2-layer byte-level GPT-2 trained from scratch: the package's
  RM before version 0.3), or a hub id / local path of a model to start from.

Each is a reward function ``r(prompts, responses) -> np.ndarray``. How good the
reward model is caps every agent built on it: its settings are a typed config
(``reward_model:`` in the zoo's YAML, ``--hyperparams reward_model.steps=400``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.base import LoraConfig, TypedConfig, check
from agents.data import PreferenceData

__all__ = ["RewardModelConfig", "LinearBTReward", "TabularBTReward", "fit_reward_model",
           "RM_KINDS"]

RM_KINDS = ("auto", "linear", "tabular", "neural")


@dataclasses.dataclass
class RewardModelConfig(TypedConfig):
    """The learned reward model's settings.

    ``kind``: auto, linear, tabular or neural (see the module docstring); ``ridge``:
    the L2 weight of the linear and tabular fits; the neural RM: ``backbone`` (policy,
    tiny, or a model id/path), ``lora`` (train a LoRA adapter and the score head instead
    of every weight), ``max_length`` (tokens; None: the backbone's context),
    ``steps``, ``batch_size``, ``learning_rate`` (None: 1e-3 for the tiny backbone
    trained from scratch, 1e-4 for a pretrained one, 1e-3 with lora), and for
    ``backbone="tiny"`` ``n_layer``, ``n_embd``, ``n_positions`` (context, tokens).
    """

    kind: str = "auto"
    ridge: float = 0.1
    backbone: str = "policy"
    lora: LoraConfig | None = None
    max_length: int | None = None
    n_layer: int = 2
    n_embd: int = 64
    n_positions: int = 256
    steps: int = 200
    batch_size: int = 32
    learning_rate: float | None = None

    def check(self) -> None:
        check(self.kind in RM_KINDS, f"reward_model.kind must be one of {RM_KINDS}, "
                                     f"got {self.kind!r}")
        check(self.ridge > 0, f"reward_model.ridge must be > 0, got {self.ridge!r}")
        for name in ("n_layer", "n_embd", "n_positions", "steps", "batch_size"):
            check(getattr(self, name) >= 1, f"reward_model.{name} must be >= 1")
        check(self.n_embd % 4 == 0, "reward_model.n_embd must be a multiple of 4 (4 heads)")
        check(self.learning_rate is None or self.learning_rate > 0,
              "reward_model.learning_rate must be > 0 (or None for the backbone's default)")
        check(bool(self.backbone), "reward_model.backbone must be 'policy', 'tiny' or a model "
                                   "id/path")
        check(self.max_length is None or self.max_length >= 2,
              f"reward_model.max_length must be >= 2, got {self.max_length!r}")
        check(self.lora is None or self.backbone != "tiny",
              "reward_model.lora needs a pretrained backbone ('policy' or a model), not 'tiny'")

    def lr(self) -> float:
        """The learning rate: as given, else the backbone's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.backbone == "tiny" or self.lora is not None else 1e-4

    def resolved_kind(self, instance: Any) -> str:
        """The kind for ``instance``: ``auto`` becomes linear, tabular or neural."""
        if self.kind != "auto":
            check((self.kind == "neural") == (not instance.exact),
                  f"reward_model.kind={self.kind!r} does not fit {instance.name}, a "
                  f"{instance.kind} env: 'neural' is for sampled (language) envs, 'tabular' and "
                  "'linear' for exact ones ('auto' picks)")
            check(self.kind != "linear" or instance.kind == "linear",
                  f"reward_model.kind='linear' needs an env with features; {instance.name} "
                  f"is {instance.kind}")
            kind = self.kind
        else:
            kind = {"linear": "linear", "exact": "tabular", "sampled": "neural"}[instance.kind]
        if kind == "neural":
            from rlhf_env.policies.causal_lm import CausalLMPolicy

            check(self.backbone != "policy" or isinstance(instance.reference, CausalLMPolicy),
                  f"reward_model.backbone='policy' builds the RM on pi0's causal LM; "
                  f"{instance.name}'s pi0 is a {type(instance.reference).__name__}: set "
                  "reward_model.backbone to 'tiny' or a model id/path")
            if self.lora is not None:
                from rlhf_env.lm.lora import require_peft

                require_peft("reward_model.lora")
        return kind


class LinearBTReward:
    """r(x, a) = <theta, phi(x, a)>, theta the ridge MLE of the BT model."""

    def __init__(self, instance: Any, data: PreferenceData, ridge: float = 0.1,
                 iterations: int = 50) -> None:
        self.catalog, self.features = instance.catalog, np.asarray(instance.features)
        d = self.features.shape[-1]
        self.ridge = float(ridge)
        pid = self.catalog.prompt_ids(data.prompts)
        x = (self.features[pid, self.catalog.response_ids(data.chosen)]
             - self.features[pid, self.catalog.response_ids(data.rejected)])  # (n, d)
        theta = np.zeros(d)
        for _ in range(iterations):  # Newton on sum softplus(-x theta) + ridge/2 |theta|^2
            z = x @ theta
            s = 1.0 / (1.0 + np.exp(z))  # sigmoid(-z)
            grad = -x.T @ s + self.ridge * theta
            hess = (x * (s * (1 - s))[:, None]).T @ x + self.ridge * np.eye(d)
            step = np.linalg.solve(hess, grad)
            theta -= step
            if np.abs(step).max() < 1e-10:
                break
        self.theta = theta
        self.sigma = self.ridge * np.eye(d) + x.T @ x
        self.n = len(x)

    def table(self) -> np.ndarray:
        """r_hat for every prompt and candidate, ``(N, K)``."""
        return self.features @ self.theta

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.table()[self.catalog.prompt_ids(prompts), self.catalog.response_ids(responses)]


class TabularBTReward:
    """One free reward per (prompt, response), fitted by ridge-regularised BT."""

    def __init__(self, instance: Any, data: PreferenceData, ridge: float = 0.1,
                 steps: int = 500) -> None:
        self.catalog = instance.catalog
        pid = torch.as_tensor(self.catalog.prompt_ids(data.prompts))
        c = torch.as_tensor(self.catalog.response_ids(data.chosen))
        r = torch.as_tensor(self.catalog.response_ids(data.rejected))
        table = torch.zeros(self.catalog.shape, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([table], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = -torch.nn.functional.logsigmoid(table[pid, c] - table[pid, r]).sum()
            loss = loss + 0.5 * ridge * (table**2).sum()
            loss.backward()
            return loss

        if len(pid):
            opt.step(closure)
        self._table = table.detach().numpy()

    def table(self) -> np.ndarray:
        return self._table.copy()

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self._table[self.catalog.prompt_ids(prompts), self.catalog.response_ids(responses)]


def neural_reward_model(instance: Any, data: PreferenceData, config: RewardModelConfig,
                        seed: int = 0) -> Any:
    """A sequence-classification RM on ``config.backbone`` trained with the BT loss; a
    :class:`~rlhf_env.lm.reward_model.RewardModel` (``train_losses`` holds the losses)."""
    from rlhf_env.lm.reward_model import RewardModel, train_bt
    from rlhf_env.models.tiny import TinyLMConfig, train_reward_model
    from rlhf_env.progress import quiet_transformers

    if config.backbone == "tiny":
        cfg = TinyLMConfig(n_layer=config.n_layer, n_embd=config.n_embd, n_head=4,
                           n_positions=config.n_positions, seed=seed)
        model, tok, losses = train_reward_model(
            data.prompts, data.chosen, data.rejected, cfg, steps=config.steps,
            batch_size=config.batch_size, lr=config.lr())
        rm = RewardModel(model, tok, max_length=config.max_length)
    else:
        reference = instance.reference
        with quiet_transformers():
            if config.backbone == "policy":
                rm = RewardModel.from_policy(reference, seed=seed, batch_size=config.batch_size,
                                             max_length=config.max_length)
            else:
                rm = RewardModel(config.backbone, device=reference.device,
                                 max_length=config.max_length, batch_size=config.batch_size)
        losses = train_bt(rm, data.prompts, data.chosen, data.rejected, steps=config.steps,
                          batch_size=config.batch_size, learning_rate=config.lr(), seed=seed,
                          lora=None if config.lora is None else config.lora.settings())
    rm.train_losses = losses
    return rm


def fit_reward_model(instance: Any, data: PreferenceData, config: RewardModelConfig | None = None,
                     seed: int = 0) -> Any:
    """Fit the BT reward model ``config`` names on ``data`` (identical pairs dropped)."""
    config = config or RewardModelConfig()
    data, _ = data.without_ties()
    kind = config.resolved_kind(instance)
    if kind == "linear":
        return LinearBTReward(instance, data, ridge=config.ridge)
    if kind == "tabular":
        return TabularBTReward(instance, data, ridge=config.ridge)
    return neural_reward_model(instance, data, config, seed=seed)
