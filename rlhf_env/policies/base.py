"""The Policy interface shared by exact bandits and language models.

A policy maps prompts to a distribution over responses (strings). One DPO
implementation runs on every env because every policy offers the same four
things: ``sample``, a summed and differentiable ``log_prob``, trainable
parameters (it is a :class:`torch.nn.Module`), and ``copy``/``save``/``load``.
"""

from __future__ import annotations

import copy as _copy
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rlhf_env.errors import DataError

__all__ = ["Policy", "register_policy_class", "is_registered", "load_policy"]

_POLICY_CLASSES: dict[str, type[Policy]] = {}
# classes whose module loads heavy libraries: imported only when a saved folder names them
_LAZY_CLASSES = {"CausalLMPolicy": "rlhf_env.policies.causal_lm"}
WEIGHTS_NAME = "policy.safetensors"
CONFIG_NAME = "policy.json"


def register_policy_class(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make ``cls`` loadable by :func:`load_policy` (by class name only)."""
    _POLICY_CLASSES[cls.__name__] = cls
    return cls


def is_registered(cls: type) -> bool:
    """Whether :func:`load_policy` can rebuild instances of ``cls``."""
    return _POLICY_CLASSES.get(cls.__name__) is cls


class Policy(torch.nn.Module, ABC):
    """A conditional distribution pi(response | prompt) over strings."""

    @abstractmethod
    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ) -> list[list[str]]:
        """Draw ``n`` responses for each prompt; returns ``len(prompts)`` lists of ``n`` strings."""

    @abstractmethod
    def log_prob(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """log pi(response_i | prompt_i), summed over the response's tokens; shape ``(n,)``.

        Differentiable with respect to the policy's parameters when they require grad.
        """

    def copy(self, *, frozen: bool = False) -> Policy:
        """A deep copy; ``frozen=True`` gives a reference copy (no grad, eval mode)."""
        twin = _copy.deepcopy(self)
        if frozen:
            twin.freeze()
        return twin

    def trainable_copy(self) -> Policy:
        """A deep copy with gradients on and in train mode (e.g. a policy initialised at pi0)."""
        twin = _copy.deepcopy(self)
        twin.requires_grad_(True)
        twin.train()
        return twin

    def freeze(self) -> Policy:
        """Turn off gradients and put the policy in eval mode (in place); returns self."""
        self.requires_grad_(False)
        self.eval()
        return self

    # -- persistence ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (everything but the tensors)."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Policy:
        """Rebuild a policy from :meth:`config` and its state dict."""
        raise NotImplementedError(f"{cls.__name__} does not support load()")

    def save(self, path: str | Path) -> Path:
        """Write ``policy.safetensors`` and ``policy.json`` into the folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        meta = {"class": type(self).__name__, "config": self.config()}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Load a policy saved by :meth:`save` (safetensors weights, JSON config)."""
        policy = load_policy(path)
        if not isinstance(policy, cls):
            raise DataError(f"{path} holds a {type(policy).__name__}, not a {cls.__name__}")
        return policy

    @classmethod
    def load_folder(cls, path: Path, config: dict[str, Any], base: Policy | None = None
                    ) -> Policy:
        """Rebuild from a folder written by :meth:`save` (overridden by LM policies, whose
        LoRA adapters load onto ``base``)."""
        return cls.from_config(config, load_file(str(path / WEIGHTS_NAME)))

    def load_weights(self, path: str | Path) -> Policy:
        """Load saved weights into this policy (same architecture); returns self."""
        self.load_state_dict(load_file(str(Path(path) / WEIGHTS_NAME)))
        return self


def load_policy(path: str | Path, *, base: Policy | None = None) -> Policy:
    """Load any registered policy class from a folder written by :meth:`Policy.save`.

    ``base``: the policy a saved LoRA adapter goes on (its weights are shared, not copied);
    without it an adapter loads its base from the source recorded when it was saved."""
    path = Path(path)
    meta_file = path / CONFIG_NAME
    if not meta_file.is_file():
        raise DataError(f"no {CONFIG_NAME} in {path}: not a saved policy folder")
    try:
        meta = json.loads(meta_file.read_text())
        name = meta["class"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{meta_file} is not a valid policy config: {e}") from e
    if name not in _POLICY_CLASSES and name in _LAZY_CLASSES:
        importlib.import_module(_LAZY_CLASSES[name])
    if name not in _POLICY_CLASSES:
        raise DataError(
            f"{meta_file} names policy class {name!r}; known: "
            f"{sorted({*_POLICY_CLASSES, *_LAZY_CLASSES})}")
    config = meta.get("config", {})
    if not isinstance(config, dict):
        raise DataError(f"{meta_file}: 'config' must be a mapping, got {config!r:.80}")
    try:
        return _POLICY_CLASSES[name].load_folder(path, config, base=base)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors, transformers, torch: one clear error
        raise DataError(f"cannot load the policy saved in {path} ({type(e).__name__}: {e}); "
                        "the folder is damaged or incomplete") from e
