"""Offline DPO (Rafailov et al. 2023) on the env's offline preference dataset.

Reference implementation: TRL's ``DPOTrainer``. The policy starts at pi0, the
reference is pi0 (fixed) and beta defaults to the env's eta: in the
KL-regularized bandit DPO's beta is the KL coefficient (Xiong et al. 2024, §5).
On an env with known features the default policy class is log-linear,
pi ∝ pi0 exp(<w, phi>); DPO is then exactly the BT maximum-likelihood fit of
theta = eta * w, i.e. the Gibbs policy of the MLE reward.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.base import Agent, AgentConfig, check, register_agent
from agents.losses import LOSS_TYPES
from agents.policies import init_policy, is_finite
from agents.trainer import PreferenceData, TrainResult, train_preferences

__all__ = ["DPOConfig", "DPOAgent", "PreferenceAgent"]


@dataclasses.dataclass
class DPOConfig(AgentConfig):
    """Hyperparameters shared by the DPO-style agents.

    ``None`` means "resolve from the env": beta -> eta; on finite envs lr 0.1,
    300 full-batch epochs; on language envs lr 5e-4, 2 epochs, batch 32.
    """

    beta: float | None = None
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0  # > 0 adds rpo_alpha * NLL(chosen) per token (RPO); 0 is DPO
    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    micro_batch_size: int | None = None
    weight_decay: float = 0.0
    parametrization: str = "auto"

    def validate(self, env: Any) -> None:
        super().validate(env)
        check(self.beta is None or self.beta > 0, f"beta must be > 0 (or None for eta), got {self.beta!r}")
        check(self.loss_type in LOSS_TYPES, f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        check(0 <= self.label_smoothing < 0.5,
              f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        check(self.label_smoothing == 0 or self.loss_type == "sigmoid",
              "label_smoothing (conservative DPO) needs loss_type='sigmoid'")
        for name in ("epochs", "batch_size", "micro_batch_size"):
            v = getattr(self, name)
            check(v is None or (isinstance(v, int) and v >= 1), f"{name} must be an int >= 1, got {v!r}")
        check(self.rpo_alpha >= 0, f"rpo_alpha must be >= 0, got {self.rpo_alpha!r}")
        check(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        check(self.parametrization in ("auto", "loglinear", "tabular"),
              f"parametrization must be auto, loglinear or tabular, got {self.parametrization!r}")


class PreferenceAgent(Agent):
    """Base of the agents that train a policy with a preference loss."""

    Config = DPOConfig

    def _train(self, policy: Any, data: PreferenceData, *, beta: float | None = None,
               seed_tag: int = 0, log_prefix: str = "train/", reference: Any = None) -> TrainResult:
        c, finite = self.config, is_finite(self.u)
        result = train_preferences(
            policy, reference or self.u.reference, data,
            beta=beta or c.beta or self.u.eta,
            loss_type=c.loss_type, label_smoothing=c.label_smoothing, rpo_alpha=c.rpo_alpha,
            epochs=c.epochs or (300 if finite else 2),
            batch_size=c.batch_size or (len(data) if finite else 32),
            micro_batch_size=c.micro_batch_size,
            lr=c.lr or (0.1 if finite else 5e-4), weight_decay=c.weight_decay,
            seed=self.seed_for(7, seed_tag), logger=self.logger, step_offset=self.global_step,
            log_prefix=log_prefix, progress=self.config.progress,
        )
        self.global_step += result.steps
        return result

    def _new_policy(self) -> Any:
        return init_policy(self.u, self.config.parametrization)


@register_agent("dpo")
class DPOAgent(PreferenceAgent):
    """Offline DPO on ``env.unwrapped.offline_dataset``; spends no queries."""

    description = "offline DPO on the env's preference dataset (Rafailov et al. 2023)"

    def learn(self, callback: Any = None, resume_from: Any = None) -> DPOAgent:
        ds = self.u.offline_dataset
        check(ds is not None and len(ds) > 0,
              "dpo needs an offline dataset: make the env with setting='offline' or 'hybrid'")
        self.policy = self._new_policy()
        result = self._train(self.policy, PreferenceData.from_dataset(ds))
        self.logger.log({"train/dropped_ties": result.dropped_ties}, self.global_step)
        if callback is not None:
            callback(self, {"iteration": 0, **result.final_metrics})
        self.logger.close()
        return self
