"""Bradley-Terry reward models fitted on the preference data an agent has.

:func:`fit_reward_model` picks the model the env allows:

* ``"linear"`` (envs that publish features phi, e.g. LinearBT): r(x, a) =
  <theta, phi(x, a)> with theta the ridge-regularised MLE, found by Newton's
  method on the convex BT log-likelihood (Xiong et al. 2024, Eq. (5)). It also
  keeps Sigma = lambda I + sum_i (phi_c - phi_r)(phi_c - phi_r)^T, the design
  matrix the paper's confidence bounds use.
* ``"tabular"`` (finite catalogs without features): one free reward per
  (prompt, response), ridge-regularised BT.
* ``"neural"`` (language envs): a tiny GPT-2 sequence-classification RM over
  bytes, trained with the BT loss (:func:`rlhf_env.lm.tiny.train_reward_model`).

Each is a reward function ``r(prompts, responses) -> np.ndarray``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.trainer import PreferenceData

__all__ = ["LinearBTReward", "TabularBTReward", "NeuralBTReward", "fit_reward_model"]


class LinearBTReward:
    """r(x, a) = <theta, phi(x, a)>, theta the ridge MLE of the BT model."""

    def __init__(self, env: Any, data: PreferenceData, ridge: float = 0.1,
                 iterations: int = 50) -> None:
        self.catalog, self.features = env.catalog, np.asarray(env.features, dtype=np.float64)
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

    def __init__(self, env: Any, data: PreferenceData, ridge: float = 0.1, steps: int = 500) -> None:
        self.catalog = env.catalog
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


class NeuralBTReward:
    """A tiny byte-level GPT-2 reward model trained with the BT loss on the data."""

    def __init__(self, data: PreferenceData, *, n_layer: int = 2, n_embd: int = 64,
                 n_positions: int = 256, steps: int = 200, batch_size: int = 32,
                 lr: float = 1e-3, seed: int = 0) -> None:
        from rlhf_env.lm.reward_model import RewardModel
        from rlhf_env.lm.tiny import TinyLMConfig, train_reward_model

        cfg = TinyLMConfig(n_layer=n_layer, n_embd=n_embd, n_head=4, n_positions=n_positions,
                           seed=seed)
        model, tok, self.losses = train_reward_model(
            data.prompts, data.chosen, data.rejected, cfg, steps=steps, batch_size=batch_size,
            lr=lr)
        self.rm = RewardModel(model, tok)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.rm(prompts, responses)


def fit_reward_model(env: Any, data: PreferenceData, kind: str = "auto", seed: int = 0,
                     **kwargs: Any) -> Any:
    """Fit the BT reward model ``kind`` (``"auto"``, ``"linear"``, ``"tabular"``, ``"neural"``)."""
    data, _ = data.without_ties()
    if kind == "auto":
        kind = ("linear" if hasattr(env, "features") else "tabular") if hasattr(
            env, "catalog") else "neural"
    if kind == "linear":
        return LinearBTReward(env, data, **kwargs)
    if kind == "tabular":
        return TabularBTReward(env, data, **kwargs)
    if kind == "neural":
        return NeuralBTReward(data, seed=seed, **kwargs)
    raise ValueError(f"reward model kind must be auto, linear, tabular or neural, got {kind!r}")
