"""LoRA adapters over one shared base model, through ``peft`` (an optional extra).

A LoRA policy is pi0's weights plus a low-rank update ``W + (alpha / r) B A`` on some
linear layers (Hu et al. 2021). Many policies are alive at once in an RLHF loop — pi0,
the policy being trained, a frozen earlier iterate — and every one of them is the same
base weights with a different adapter, or none. So the base model is held **once**:
``peft`` injects one adapter *slot* into it (:class:`AdapterSlot`), each policy owns its
adapter's tensors, and before a forward pass the slot is pointed at the tensors of the
policy that runs it (no copy) or switched off for pi0 (:meth:`AdapterSlot.activate`).
pi0 is then exactly the base model with the adapter disabled, as in TRL's DPOTrainer.

Caveat: gradient checkpointing recomputes a forward pass during ``backward``; run no
other policy over the same base between a policy's forward pass and its backward pass
(the package's trainers never do).

Saved adapters use peft's format (``adapter_model.safetensors`` with
``base_model.model.<module>.lora_A.weight`` keys, ``adapter_config.json``), so
``peft.PeftModel.from_pretrained(base, folder)`` reads ours and we read peft's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf_env.errors import DataError, InvalidArgumentError, MissingDependencyError

__all__ = ["LoraSettings", "AdapterSlot", "peft_available", "require_peft", "ADAPTER_WEIGHTS",
           "ADAPTER_CONFIG", "base_fingerprint", "read_settings"]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_SLOT = "default"
_ATTR = "_rlhf_env_adapter_slot"


def peft_available() -> bool:
    """Whether ``peft`` can be imported (probed without importing it)."""
    import importlib.util

    return importlib.util.find_spec("peft") is not None


def require_peft(what: str = "LoRA") -> Any:
    """Import ``peft``, or raise :class:`MissingDependencyError` naming the pip command."""
    if not peft_available():
        raise MissingDependencyError(
            f"{what} needs peft: pip install 'rlhf-env[lora]' (or pip install peft)")
    import peft

    return peft


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """What a LoRA adapter adapts: rank ``r``, scale ``alpha`` (the update is
    ``alpha / r * B A``) and ``target_modules`` (None: peft's default for the
    architecture, e.g. the attention's query and value projections; ``"all-linear"``;
    or module names such as ``("q_proj", "v_proj")``)."""

    r: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise InvalidArgumentError(f"lora r must be an int >= 1, got {self.r!r}")
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float))
                or not math.isfinite(self.alpha) or self.alpha <= 0):
            raise InvalidArgumentError(f"lora alpha must be a positive number, got {self.alpha!r}")
        t = self.target_modules
        if isinstance(t, list):
            object.__setattr__(self, "target_modules", t := tuple(t))
        if not (t is None or t == "all-linear" or (isinstance(t, tuple) and t and all(
                isinstance(x, str) and x for x in t))):
            raise InvalidArgumentError(
                f"lora target_modules must be None, 'all-linear' or a list of module names, "
                f"got {t!r}")

    def peft_config(self) -> Any:
        peft = require_peft()
        targets = list(self.target_modules) if isinstance(self.target_modules, tuple) else \
            self.target_modules
        return peft.LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=0.0,
                               target_modules=targets, bias="none")

    def to_dict(self) -> dict[str, Any]:
        t = self.target_modules
        return {"r": self.r, "alpha": self.alpha,
                "target_modules": list(t) if isinstance(t, tuple) else t}


def _key(path: str, which: str) -> str:
    """The policy-side name of one adapter tensor (no dots: a ParameterDict key)."""
    return f"{path}.{which}".replace(".", "__")


class AdapterSlot:
    """The one LoRA slot injected into a base model; every adapter over it points into it.

    Made by :meth:`attach` (once per base model; later calls return the same slot and
    check the settings). :meth:`new_weights` makes a fresh adapter (A random, B zero:
    the update is zero, so the policy starts at pi0); :meth:`activate` points the slot at
    an adapter's tensors, or disables it (pi0).
    """

    def __init__(self, model: nn.Module, settings: LoraSettings) -> None:
        peft = require_peft()
        from peft.tuners.lora import LoraLayer

        self.settings = settings
        config = settings.peft_config()
        if settings.target_modules is None:  # peft's default, where it has one for the family
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

            model_type = getattr(getattr(model, "config", None), "model_type", None)
            if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
                from rlhf_env.progress import log

                log.info("peft has no default LoRA target modules for %r models: adapting "
                         "every linear layer ('all-linear')", model_type)
                config.target_modules = "all-linear"
        try:
            peft.inject_adapter_in_model(config, model, adapter_name=_SLOT)
        except ValueError as e:  # e.g. target modules not found in the model
            raise InvalidArgumentError(
                f"cannot put LoRA on {type(model).__name__} with target_modules="
                f"{settings.target_modules!r}: {e}") from e
        self.layers: dict[str, Any] = {name: m for name, m in model.named_modules()
                                       if isinstance(m, LoraLayer) and _SLOT in m.lora_A}
        if not self.layers:
            raise InvalidArgumentError(
                f"LoRA with target_modules={settings.target_modules!r} adapted no layer of "
                f"{type(model).__name__}")
        self.active: Mapping[str, torch.Tensor] | None | str = "unset"
        self.activate(None)

    @classmethod
    def of(cls, model: nn.Module) -> AdapterSlot | None:
        """The slot of ``model``, or None if it has none."""
        return model.__dict__.get(_ATTR)

    @classmethod
    def attach(cls, model: nn.Module, settings: LoraSettings) -> AdapterSlot:
        """The slot of ``model``, injected now if it has none; one setting per base model."""
        slot = cls.of(model)
        if slot is None:
            slot = cls(model, settings)
            model.__dict__[_ATTR] = slot
        elif slot.settings != settings:
            raise InvalidArgumentError(
                f"this base model already carries LoRA adapters with {slot.settings.to_dict()}; "
                f"every adapter over one base model uses the same settings, got "
                f"{settings.to_dict()}")
        return slot

    # -- adapters --------------------------------------------------------------------------
    def new_weights(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A fresh adapter: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (peft's kaiming init),
        B = 0, in float32 on the base layers' device."""
        out = {}
        for path, layer in self.layers.items():
            a, b = layer.lora_A[_SLOT].weight, layer.lora_B[_SLOT].weight
            bound = 1.0 / math.sqrt(a.shape[1])
            w = torch.rand(a.shape, generator=generator, dtype=torch.float32) * 2 - 1
            out[_key(path, "lora_A")] = (w * bound).to(a.device)
            out[_key(path, "lora_B")] = torch.zeros(b.shape, dtype=torch.float32, device=b.device)
        return out

    def activate(self, weights: Mapping[str, torch.Tensor] | None) -> None:
        """Point the slot at ``weights`` (their tensors, not copies), or disable it (None)."""
        if weights is self.active:
            return
        for path, layer in self.layers.items():
            if weights is not None:
                layer.lora_A[_SLOT].weight = weights[_key(path, "lora_A")]
                layer.lora_B[_SLOT].weight = weights[_key(path, "lora_B")]
            # peft's public switch (enable_adapters) also sets requires_grad on whatever the
            # slot holds, which would unfreeze a frozen adapter: set the flag alone
            layer._disable_adapters = weights is None  # noqa: SLF001
        self.active = weights

    def deltas(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The update each adapted layer's weight gets, ``{module path: delta W}``."""
        self.activate(weights)
        with torch.no_grad():
            return {path: layer.get_delta_weight(_SLOT) for path, layer in self.layers.items()}

    def base_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The base model's own state dict (adapter tensors left out, peft's
        ``base_layer`` indirection removed): the keys of the model before injection."""
        return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()
                if ".lora_" not in k}

    def merged_state_dict(self, model: nn.Module, weights: Mapping[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor]:
        """The base state dict with ``weights`` merged in (W + alpha/r B A)."""
        state = {k: v.clone() for k, v in self.base_state_dict(model).items()}
        for path, delta in self.deltas(weights).items():
            w = state[f"{path}.weight"]
            state[f"{path}.weight"] = (w.double() + delta.double()).to(w.dtype)
        return state

    # -- files (peft's format) ---------------------------------------------------------------
    def save(self, weights: Mapping[str, torch.Tensor], folder: Path, base: str | None) -> None:
        """Write ``weights`` as a peft adapter folder (``base``: the base model's name)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for path in self.layers:
            for which in ("lora_A", "lora_B"):
                tensors[f"base_model.model.{path}.{which}.weight"] = (
                    weights[_key(path, which)].detach().cpu().contiguous().clone())
        save_file(tensors, str(folder / ADAPTER_WEIGHTS))
        config = self.settings.peft_config()
        config.base_model_name_or_path = base
        config.save_pretrained(str(folder))

    def load(self, folder: Path) -> dict[str, torch.Tensor]:
        """Read a peft adapter folder written for this slot's modules and settings; a
        missing, unexpected or misshapen tensor is a :class:`DataError` naming it."""
        from safetensors.torch import load_file

        settings = read_settings(folder)
        if settings.r != self.settings.r or settings.alpha != self.settings.alpha:
            raise DataError(
                f"the adapter in {folder} has r={settings.r}, alpha={settings.alpha}; this "
                f"base model's adapters have r={self.settings.r}, alpha={self.settings.alpha}")
        state = load_file(str(folder / ADAPTER_WEIGHTS))
        out, expected = {}, set()
        for path, layer in self.layers.items():
            for which in ("lora_A", "lora_B"):
                name = f"base_model.model.{path}.{which}.weight"
                expected.add(name)
                if name not in state:
                    raise DataError(f"the adapter in {folder} lacks {name}: it was made for "
                                    "another model or other target modules")
                ref = getattr(layer, which)[_SLOT].weight
                if tuple(state[name].shape) != tuple(ref.shape):
                    raise DataError(f"the adapter in {folder}: {name} has shape "
                                    f"{tuple(state[name].shape)}, the model needs {tuple(ref.shape)}")
                out[_key(path, which)] = state[name].to(device=ref.device, dtype=torch.float32)
        extra = sorted(set(state) - expected)
        if extra:
            raise DataError(f"the adapter in {folder} has tensors this model has no place for: "
                            f"{extra[:5]}{' ...' if len(extra) > 5 else ''}")
        return out


def base_fingerprint(model: nn.Module) -> str:
    """A short digest that tells one base model from another: its architecture's config
    (sizes, vocabulary) and its input embedding's values. Adapters record it and refuse to
    load onto a model with another (cached on the model: a LoRA base is frozen)."""
    import hashlib

    cached = model.__dict__.get("_rlhf_env_fingerprint")
    if cached is not None:
        return cached
    cfg = model.config.to_dict()
    keep = {k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool))
            and k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype")}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True).encode())
    emb = model.get_input_embeddings().weight.detach()
    h.update(emb.float().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    model.__dict__["_rlhf_env_fingerprint"] = digest
    return digest


def read_settings(folder: Path) -> LoraSettings:
    """The :class:`LoraSettings` of a peft adapter folder."""
    f = Path(folder) / ADAPTER_CONFIG
    if not f.is_file() or not (Path(folder) / ADAPTER_WEIGHTS).is_file():
        raise DataError(f"{folder} is not a LoRA adapter folder (it needs {ADAPTER_CONFIG} and "
                        f"{ADAPTER_WEIGHTS})")
    try:
        cfg = json.loads(f.read_text())
        targets = cfg.get("target_modules")
        if isinstance(targets, list):
            targets = tuple(sorted(targets))
        if cfg.get("peft_type", "LORA") != "LORA":
            raise DataError(f"{f} holds a {cfg.get('peft_type')} adapter, not LoRA")
        return LoraSettings(r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
                            target_modules=targets)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, InvalidArgumentError) as e:
        raise DataError(f"{f} is not a valid LoRA adapter config: {e}") from e
