"""Offline DPO (Rafailov et al. 2023) on the env's offline preference dataset.

Reference implementation: TRL's ``DPOTrainer`` (hyperparameter names follow its
``DPOConfig``). The policy starts at pi0, the reference is pi0 (fixed) and beta
defaults to the env's eta.

**beta = eta holds only when the oracle is Bradley-Terry at temperature 1.** DPO
fits P(a1 > a2) = sigmoid(beta·h) with beta·h the difference of implicit rewards
beta·log(pi/pi0); its optimum is pi0·exp(r_BT / beta) where r_BT is the reward the
*labels* follow. A BT oracle at temperature T labels with sigmoid((r*(a1) -
r*(a2)) / T), so r_BT = r*/T and the optimum is pi0·exp(r* / (T·beta)): the
bandit's pi* needs beta = eta / T. Label noise (flips at rate p) flattens the
labels further and has no exact beta. The env's ``oracle_config`` says which
oracle labels; pass ``beta`` explicitly for any other than ``"bt"``.

On a linear env the default policy class is log-linear, pi ∝ pi0 exp(<w, phi>);
DPO is then exactly the BT maximum-likelihood fit of theta = eta * w (without
ridge), i.e. the Gibbs policy of the MLE reward.

``dpo_pi0``: offline DPO at *equal labels*: the query budget (``query_pairs``,
default all of it) is spent first on pairs of pi0 samples labelled through the
env, and DPO trains on offline + queried pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from agents.algorithms.best_of_n import ReferencePairs, query_reference_pairs
from agents.base import AgentConfig, LoraConfig, check, check_language_only, register_agent
from agents.data import PreferenceData
from agents.loop import Agent
from agents.losses import LOSS_TYPES
from agents.trainer import TrainResult, train_preferences
from rlhf_env.policies import LogLinearPolicy, Policy, TabularPolicy

__all__ = ["DPOConfig", "OfflineDPOConfig", "DPOAgent", "DPOPi0Agent", "PreferenceAgent",
           "init_policy", "PARAMETRIZATIONS"]

PARAMETRIZATIONS = ("auto", "loglinear", "tabular")


def init_policy(instance: Any, parametrization: str = "auto", *, lora: Any = None,
                gradient_checkpointing: bool = False, seed: int = 0) -> Policy:
    """A trainable policy equal to pi0.

    ``"loglinear"`` (linear envs: pi ∝ pi0 exp(<w, phi>), the class that holds the Gibbs
    optimum), ``"tabular"`` (exact envs: free logits), or on sampled envs a trainable copy
    of the reference model: a full copy, or with ``lora`` (a :class:`~agents.base.LoraConfig`)
    an adapter over pi0's own weights (A drawn from ``seed``); ``gradient_checkpointing``
    recomputes activations in backward. ``"auto"`` picks log-linear where the env has
    features.
    """
    ref = instance.reference
    if not instance.exact:
        policy = ref.trainable_copy(lora=None if lora is None else lora.settings(), seed=seed)
        if gradient_checkpointing:
            policy.set_gradient_checkpointing(True)
        return policy
    if parametrization == "auto":
        parametrization = "loglinear" if instance.kind == "linear" else "tabular"
    if parametrization == "loglinear":
        check(instance.kind == "linear",
              f"parametrization='loglinear' needs an env with features; {instance.name} is "
              f"{instance.kind}")
        return LogLinearPolicy(instance.catalog, ref.log_probs_table().detach(), instance.features)
    return TabularPolicy.from_policy(ref)


@dataclasses.dataclass
class DPOConfig(AgentConfig):
    """Hyperparameters shared by the DPO-style agents (TRL's names).

    ``beta`` (None: the env's eta, right for a BT oracle at temperature 1 only; see the
    module docstring), ``loss_type`` (sigmoid, ipo, hinge), ``ipo_average``
    (IPO on per-token averaged log-probs, as TRL and the IPO authors; False: summed),
    ``label_smoothing`` (conservative DPO's eps), ``rpo_alpha`` (> 0 adds rpo_alpha times
    the per-token NLL of the chosen response: RPO), ``learning_rate``, ``num_train_epochs``,
    ``per_device_train_batch_size`` (None: the whole dataset in one batch),
    ``gradient_accumulation_steps`` (an optimiser step sees per_device_train_batch_size x
    gradient_accumulation_steps x processes pairs), ``max_grad_norm`` (None: no clipping),
    ``weight_decay``, ``parametrization`` (exact envs: auto, loglinear or tabular).

    Language envs: ``lora`` (a :class:`~agents.base.LoraConfig`: train an adapter over pi0's
    weights, pi0 = the adapter disabled), ``gradient_checkpointing``, ``max_length`` and
    ``max_prompt_length`` (tokens of prompt + response and of the prompt; None: the
    policy's; longer pairs are cut, the prompt from the left keeping its head, and counted
    in ``train/truncated``).
    """

    beta: float | None = None
    loss_type: str = "sigmoid"
    ipo_average: bool = True
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    learning_rate: float = 5e-4
    num_train_epochs: int = 2
    per_device_train_batch_size: int | None = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 10.0
    weight_decay: float = 0.0
    parametrization: str = "auto"
    lora: LoraConfig | None = None
    gradient_checkpointing: bool = False
    max_length: int | None = None
    max_prompt_length: int | None = None

    ALIASES: ClassVar[dict[str, str]] = {"lr": "learning_rate", "epochs": "num_train_epochs",
                                         "batch_size": "per_device_train_batch_size"}

    def check(self) -> None:
        super().check()
        check(self.beta is None or self.beta > 0, f"beta must be > 0 (or None for eta), got {self.beta!r}")
        check(self.loss_type in LOSS_TYPES, f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        check(0 <= self.label_smoothing < 0.5,
              f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        check(self.label_smoothing == 0 or self.loss_type == "sigmoid",
              "label_smoothing (conservative DPO) needs loss_type='sigmoid'")
        check(self.num_train_epochs >= 1, f"num_train_epochs must be >= 1, got {self.num_train_epochs!r}")
        check(self.per_device_train_batch_size is None or self.per_device_train_batch_size >= 1,
              f"per_device_train_batch_size must be >= 1 (or None for the whole dataset), got "
              f"{self.per_device_train_batch_size!r}")
        check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        check(self.rpo_alpha >= 0, f"rpo_alpha must be >= 0, got {self.rpo_alpha!r}")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate!r}")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm must be > 0")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check(self.parametrization in PARAMETRIZATIONS,
              f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        check(self.max_length is None or self.max_length >= 2,
              f"max_length must be >= 2 (or None), got {self.max_length!r}")
        check(self.max_prompt_length is None or (
            self.max_prompt_length >= 1 and (self.max_length is None
                                             or self.max_prompt_length < self.max_length)),
              f"max_prompt_length must be >= 1 and below max_length, got "
              f"{self.max_prompt_length!r}")

    def check_env(self, instance: Any) -> None:
        check(self.parametrization != "loglinear" or instance.kind == "linear",
              f"parametrization='loglinear' needs a linear env; {instance.name} is {instance.kind}")
        check_language_only(instance, type(self).__name__, lora=self.lora,
                            gradient_checkpointing=self.gradient_checkpointing,
                            max_length=self.max_length, max_prompt_length=self.max_prompt_length)


class PreferenceAgent(Agent):
    """Base of the agents that train a policy with a preference loss."""

    Config = DPOConfig

    def train(self, policy: Any, data: PreferenceData, *, beta: float | None = None,
              seed_tag: int = 0, log_prefix: str = "train/", reference: Any = None,
              xpo_alpha: float = 0.0, xpo_samples: list | None = None) -> TrainResult:
        """Train ``policy`` on ``data`` with the configured loss; advances ``global_step``."""
        c = self.config
        result = train_preferences(
            policy, self.instance.reference if reference is None else reference, data,
            beta=beta or c.beta or self.instance.eta, loss_type=c.loss_type,
            label_smoothing=c.label_smoothing, rpo_alpha=c.rpo_alpha, ipo_average=c.ipo_average,
            num_train_epochs=c.num_train_epochs,
            per_device_train_batch_size=c.per_device_train_batch_size,
            gradient_accumulation_steps=c.gradient_accumulation_steps,
            learning_rate=c.learning_rate, weight_decay=c.weight_decay,
            max_grad_norm=c.max_grad_norm, seed=self.seed_for(7, seed_tag), logger=self.logger,
            step_offset=self.global_step, log_prefix=log_prefix, progress=c.progress,
            max_length=c.max_length, max_prompt_length=c.max_prompt_length,
            xpo_alpha=xpo_alpha, xpo_samples=xpo_samples)
        self.global_step += result.steps
        return result

    def new_policy(self) -> Policy:
        """A trainable policy equal to pi0, of the configured parametrization."""
        c = self.config
        return init_policy(self.instance, c.parametrization, lora=c.lora,
                           gradient_checkpointing=c.gradient_checkpointing,
                           seed=self.seed_for(11))


@dataclasses.dataclass
class OfflineDPOConfig(ReferencePairs, DPOConfig):
    """:class:`DPOConfig` and ``query_pairs`` (:class:`ReferencePairs`; default 0)."""

    query_pairs: int | None = 0

    def check_env(self, instance: Any) -> None:
        super().check_env(instance)
        self.check_data(instance, "dpo",
                        "dpo needs an offline dataset: make the env with setting='offline' or "
                        "'hybrid' (or pass query_pairs > 0 to label pairs of pi0 samples)")


@register_agent("dpo")
class DPOAgent(PreferenceAgent):
    """Offline DPO on the env's offline dataset (plus ``query_pairs`` labelled pi0 pairs)."""

    Config = OfflineDPOConfig
    description = "offline DPO on the env's preference dataset (Rafailov et al. 2023)"

    def collect(self, t: int) -> PreferenceData | None:
        return query_reference_pairs(self, self.config.pairs_to_query(self.instance))

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        self.policy = self.new_policy()
        result = self.train(self.policy, self.offline + self.data)
        return {"train/dropped_ties": result.dropped_ties, "train/queried_pairs": len(self.data)}


@dataclasses.dataclass
class Pi0DPOConfig(OfflineDPOConfig):
    """As :class:`OfflineDPOConfig`, spending the whole query budget by default."""

    query_pairs: int | None = None


@register_agent("dpo_pi0")
class DPOPi0Agent(DPOAgent):
    """dpo at equal labels: the query budget spent on pairs of pi0 samples first."""

    Config = Pi0DPOConfig
    description = "offline DPO on offline data + the query budget spent on pairs of pi0 samples"
