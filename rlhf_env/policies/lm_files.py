"""Files of a :class:`~rlhf_env.policies.CausalLMPolicy`: safetensors weights and the
tokenizer, or a LoRA adapter alone in peft's format with its base model's source and
fingerprint, and strict loading of either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhf_env.errors import DataError
from rlhf_env.lm.loading import load_base_state, read_model_state
from rlhf_env.policies.base import CONFIG_NAME, Policy

if TYPE_CHECKING:
    from rlhf_env.policies.causal_lm import CausalLMPolicy

__all__ = ["FilesMixin"]


class FilesMixin:
    """The persistence methods of :class:`~rlhf_env.policies.CausalLMPolicy`."""

    def save(self, path: str | Path) -> Path:
        """Write the policy into folder ``path``: ``policy.json``, and the model (safetensors)
        and tokenizer under ``model/`` — or, for a LoRA adapter, the adapter alone under
        ``adapter/`` (peft's format), with the base model's source in ``policy.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"class": type(self).__name__, "config": self.config()}
        if self.adapter is not None:
            from rlhf_env.lm.lora import AdapterSlot, base_fingerprint

            slot = AdapterSlot.of(self.model)
            assert slot is not None
            slot.save(self.adapter, path / "adapter", self.source)
            meta["adapter"] = {"base": self.source, "lora": slot.settings.to_dict(),
                               "base_model_type": self.model.config.model_type,
                               "base_fingerprint": base_fingerprint(self.model)}
        else:
            from rlhf_env.progress import quiet_transformers

            with quiet_transformers():
                self.model.save_pretrained(path / "model", safe_serialization=True)
                self.tokenizer.save_pretrained(path / "model")
            meta["source"] = self.source
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load_folder(cls, path: Path, config: dict[str, Any], base: Policy | None = None
                    ) -> CausalLMPolicy:
        meta = json.loads((path / CONFIG_NAME).read_text())
        adapter = meta.get("adapter")
        if adapter is None:
            from rlhf_env.progress import quiet_transformers

            with quiet_transformers():
                return cls(str(path / "model"), source=meta.get("source") or str(path / "model"),
                           **config)
        if base is None:
            where = adapter.get("base")
            if not where:
                raise DataError(
                    f"{path} holds a LoRA adapter whose base model was built in memory (no "
                    "source recorded): load it with load_policy(path, base=<the base policy>)")
            base = cls(where, **config)
        if not isinstance(base, cls):
            raise DataError(f"the LoRA adapter in {path} needs a CausalLMPolicy base, got "
                            f"{type(base).__name__}")
        from rlhf_env.lm.lora import base_fingerprint

        want = adapter.get("base_fingerprint")
        if want is not None and base_fingerprint(base.model) != want:
            raise DataError(
                f"the LoRA adapter in {path} was trained on another base model (fingerprint "
                f"{want}, recorded source {adapter.get('base')!r}); this base is a "
                f"{base.model.config.model_type!r} model with fingerprint "
                f"{base_fingerprint(base.model)}")
        return base.with_adapter(path / "adapter")

    def load_weights(self, path: str | Path) -> CausalLMPolicy:
        """Load the weights a :meth:`save` of the same architecture wrote into this policy.

        Strict: a missing, unexpected or misshapen tensor is a :class:`DataError` naming it,
        and so is another architecture. Sharded saves and transformers' key conversions are
        read by ``from_pretrained``. An adapter folder loads into this policy's adapter.
        """
        path = Path(path)
        meta_file = path / CONFIG_NAME
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if meta.get("adapter") is not None or (path / "adapter").is_dir():
            if self.adapter is None:
                raise DataError(f"{path} holds a LoRA adapter; this policy has none (use "
                                "with_adapter or load_policy(path, base=...))")
            from rlhf_env.lm.lora import AdapterSlot

            slot = AdapterSlot.of(self.model)
            assert slot is not None
            loaded = slot.load(path / "adapter")
            with torch.no_grad():
                for k, v in loaded.items():
                    self.adapter[k].copy_(v)
        else:
            load_base_state(self.model, read_model_state(path / "model",
                                                         self.model.config.model_type), path)
        self._lp_cache.clear()
        return self
