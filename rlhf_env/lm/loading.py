"""Loading Hugging Face causal LMs with clear errors: device and dtype names, safetensors-only
weights, pinned revisions of the default hub ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlhf_env.errors import DataError, InvalidArgumentError

__all__ = ["resolve_device", "resolve_dtype", "pretrained_kwargs", "load_causal_lm"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise InvalidArgumentError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


_LM_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def pretrained_kwargs(where: str, revision: str | None, allow_bin_weights: bool
                      ) -> dict[str, Any]:
    """``from_pretrained`` options: safetensors only (unless ``allow_bin_weights``: ``.bin``
    files are pickles, which can run code when loaded), and the pinned revision of a default
    hub id (:data:`rlhf_env.hub.DEFAULT_REVISIONS`) unless ``revision`` is given."""
    from rlhf_env.hub import DEFAULT_REVISIONS

    kwargs: dict[str, Any] = {"use_safetensors": None if allow_bin_weights else True}
    revision = revision or DEFAULT_REVISIONS.get(where)
    if revision is not None:
        kwargs["revision"] = revision
    return kwargs


def load_causal_lm(name_or_path: str | Path, *, revision: str | None = None,
                   allow_bin_weights: bool = False, dtype: str | torch.dtype | None = None,
                   device_map: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a hub id or a local folder, with clear errors.

    Weights load from safetensors only unless ``allow_bin_weights=True`` (see
    :func:`pretrained_kwargs`); ``revision`` pins a hub revision; ``dtype`` (a name or a
    torch dtype; default float32) and ``device_map`` (e.g. ``"auto"``) go to
    ``from_pretrained``, so a large model is loaded in its final precision and place
    rather than in float32 on the CPU first.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where = str(name_or_path)
    opts = pretrained_kwargs(where, revision, allow_bin_weights)
    kwargs["dtype"] = resolve_dtype(dtype) or torch.float32
    if device_map is not None:
        kwargs["device_map"] = device_map
    rev = {k: v for k, v in opts.items() if k == "revision"}
    try:
        archs = getattr(AutoConfig.from_pretrained(where, **rev), "architectures", None) or []
        if archs and not any(a.endswith(_LM_HEADS) for a in archs):
            raise DataError(
                f"{where!r} is not a causal language model: its config names {archs}; "
                "pass a model with a language-modelling head (e.g. ...ForCausalLM)"
            )
        tokenizer = AutoTokenizer.from_pretrained(where, **rev)
        model = AutoModelForCausalLM.from_pretrained(where, **opts, **kwargs)
    except ValueError as e:  # e.g. "Unrecognized configuration class ... for AutoModelForCausalLM"
        raise DataError(f"{where!r} is not a causal language model: {e}") from e
    except OSError as e:
        hint = ("" if allow_bin_weights else " If the checkpoint has only pytorch_model.bin "
                "(a pickle) and you trust it, pass allow_bin_weights=True.")
        raise DataError(
            f"cannot load a causal LM from {where!r} (no local folder of that name with "
            f"safetensors weights, and the hub is unreachable or has no such model): {e}.{hint}"
        ) from e
    return model, tokenizer
