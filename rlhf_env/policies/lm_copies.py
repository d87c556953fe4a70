"""Copies of a :class:`~rlhf_env.policies.CausalLMPolicy`: deep copies, trainable copies,
LoRA adapters over one shared base model (pi0 = the same model with the adapter disabled),
frozen views of the base, and merged exports."""

from __future__ import annotations

import copy as _copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.lm.loading import disable_dropout
from rlhf_env.lm.scoring import Scorer

if TYPE_CHECKING:
    from rlhf_env.policies.causal_lm import CausalLMPolicy

__all__ = ["CopiesMixin"]


class CopiesMixin:
    """The copy and adapter methods of :class:`~rlhf_env.policies.CausalLMPolicy`."""

    def _twin(self, model: nn.Module) -> CausalLMPolicy:
        """A policy over ``model`` with this policy's tokenizer and settings."""
        return type(self)(model, self.tokenizer, source=self.source, **self.config())

    def trainable_copy(self, *, lora: Any = None, seed: int = 0) -> CausalLMPolicy:
        """A trainable policy equal to this one, dropout off.

        Without ``lora`` (and for a policy without an adapter): a deep copy of the model.
        With ``lora`` (:class:`~rlhf_env.lm.lora.LoraSettings` or a dict of its fields), or
        when this policy is itself an adapter: a new adapter over the *same* base model
        (A drawn from ``seed``, B = 0, so it starts equal to this policy; an adapter policy's
        copy starts from its adapter's values), the base frozen.
        """
        if lora is None and self.adapter is None:
            twin = super().trainable_copy()
            assert isinstance(twin, type(self))
            disable_dropout(twin.model)
            return twin.train()
        from rlhf_env.lm.lora import AdapterSlot, LoraSettings

        if isinstance(lora, dict):
            lora = LoraSettings(**lora)
        if self.adapter is not None:
            slot = AdapterSlot.of(self.model)
            assert slot is not None
            if lora is not None and lora != slot.settings:
                raise InvalidArgumentError(
                    f"this policy is a LoRA adapter with {slot.settings.to_dict()}; its copies "
                    f"keep those settings, got {lora.to_dict()}")
            weights = {k: v.detach().clone() for k, v in self.adapter.items()}
        else:
            slot = AdapterSlot.attach(self.model, lora)
            weights = slot.new_weights(torch.Generator().manual_seed(int(seed)))
        for p in self.parameters():  # the base stays pi0
            p.requires_grad_(False)
        disable_dropout(self.model)
        twin = self._twin(self.model)
        twin.adapter = nn.ParameterDict({k: nn.Parameter(v) for k, v in weights.items()})
        return twin.train()

    def __deepcopy__(self, memo: dict[int, Any]) -> CausalLMPolicy:
        """A deep copy without the sampling engine (a copy makes its own on first use)."""
        cls = type(self)
        twin = cls.__new__(cls)
        memo[id(self)] = twin
        for k, v in self.__dict__.items():
            if k not in ("_engine", "scorer"):
                twin.__dict__[k] = _copy.deepcopy(v, memo)
        twin.__dict__["_engine"] = None
        twin.scorer = Scorer(twin.model, twin.encoder.pad_id, twin.activate)
        return twin

    def copy(self, *, frozen: bool = False) -> CausalLMPolicy:
        """A copy; an adapter policy's copy shares the base model and copies the adapter."""
        if self.adapter is None:
            twin = super().copy(frozen=frozen)
            assert isinstance(twin, type(self))
            return twin
        twin = self._twin(self.model)
        twin.adapter = nn.ParameterDict({k: nn.Parameter(v.detach().clone(),
                                                         requires_grad=v.requires_grad)
                                         for k, v in self.adapter.items()})
        twin.train(self.training)
        return twin.freeze() if frozen else twin

    def base_policy(self) -> CausalLMPolicy:
        """The base model without any adapter (pi0 for an adapter trained from pi0), as a
        frozen policy over the same weights."""
        return self._twin(self.model).freeze()

    def merged(self) -> CausalLMPolicy:
        """A plain policy whose weights are the base with this adapter merged in (W + alpha/r
        B A): what to export or hand to tools that do not know LoRA. A policy without an
        adapter returns a frozen deep copy."""
        if self.adapter is None:
            return self.copy(frozen=True)
        from rlhf_env.lm.lora import AdapterSlot

        slot = AdapterSlot.of(self.model)
        assert slot is not None
        state = slot.merged_state_dict(self.model, self.adapter)
        with torch.random.fork_rng(devices=[]):
            fresh = type(self.model)(_copy.deepcopy(self.model.config))
        fresh.load_state_dict(state, strict=True)
        fresh.generation_config = _copy.deepcopy(self.model.generation_config)
        fresh.to(device=self.device, dtype=next(iter(state.values())).dtype)
        return self._twin(fresh).freeze()

    def with_adapter(self, folder: str | Path, *, trainable: bool = False) -> CausalLMPolicy:
        """A policy of this base model with the LoRA adapter saved in ``folder`` (ours or
        peft's format), sharing this policy's weights; frozen unless ``trainable``."""
        from rlhf_env.lm.lora import AdapterSlot, read_settings

        folder = Path(folder)
        settings = read_settings(folder)
        slot = AdapterSlot.of(self.model)
        if slot is None:
            slot = AdapterSlot.attach(self.model, settings)
        weights = slot.load(folder)
        twin = self._twin(self.model)
        twin.adapter = nn.ParameterDict({k: nn.Parameter(v, requires_grad=trainable)
                                         for k, v in weights.items()})
        return twin.train() if trainable else twin.freeze()
