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
* ``"neural"`` (sampled envs): a tiny GPT-2 sequence-classification RM over
  bytes, trained with the BT loss (:func:`rlhf_env.lm.tiny.train_reward_model`).

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

from agents.base import TypedConfig, check
from agents.data import PreferenceData

__all__ = ["RewardModelConfig", "LinearBTReward", "TabularBTReward", "fit_reward_model",
           "RM_KINDS"]

RM_KINDS = ("auto", "linear", "tabular", "neural")


@dataclasses.dataclass
class RewardModelConfig(TypedConfig):
    """The learned reward model's settings.

    ``kind``: auto, linear, tabular or neural (see the module docstring); ``ridge``:
    the L2 weight of the linear and tabular fits; the neural RM: ``n_layer``,
    ``n_embd``, ``n_positions`` (context, tokens), ``steps``, ``batch_size``,
    ``learning_rate``.
    """

    kind: str = "auto"
    ridge: float = 0.1
    n_layer: int = 2
    n_embd: int = 64
    n_positions: int = 256
    steps: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3

    def check(self) -> None:
        check(self.kind in RM_KINDS, f"reward_model.kind must be one of {RM_KINDS}, "
                                     f"got {self.kind!r}")
        check(self.ridge > 0, f"reward_model.ridge must be > 0, got {self.ridge!r}")
        for name in ("n_layer", "n_embd", "n_positions", "steps", "batch_size"):
            check(getattr(self, name) >= 1, f"reward_model.{name} must be >= 1")
        check(self.n_embd % 4 == 0, "reward_model.n_embd must be a multiple of 4 (4 heads)")
        check(self.learning_rate > 0, "reward_model.learning_rate must be > 0")

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
            return self.kind
        return {"linear": "linear", "exact": "tabular", "sampled": "neural"}[instance.kind]


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


def neural_reward_model(data: PreferenceData, config: RewardModelConfig, seed: int = 0) -> Any:
    """A tiny byte-level GPT-2 RM trained with the BT loss; a
    :class:`~rlhf_env.lm.reward_model.RewardModel` (``train_losses`` holds the losses)."""
    from rlhf_env.lm.reward_model import RewardModel
    from rlhf_env.lm.tiny import TinyLMConfig, train_reward_model

    cfg = TinyLMConfig(n_layer=config.n_layer, n_embd=config.n_embd, n_head=4,
                       n_positions=config.n_positions, seed=seed)
    model, tok, losses = train_reward_model(
        data.prompts, data.chosen, data.rejected, cfg, steps=config.steps,
        batch_size=config.batch_size, lr=config.learning_rate)
    rm = RewardModel(model, tok)
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
    return neural_reward_model(data, config, seed=seed)
