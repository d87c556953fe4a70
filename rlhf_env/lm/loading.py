"""Loading Hugging Face causal LMs with clear errors: device and dtype names, safetensors-only
weights, pinned revisions of the default hub ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf_env.errors import DataError, InvalidArgumentError

__all__ = ["resolve_device", "resolve_dtype", "pretrained_kwargs", "load_causal_lm",
           "disable_dropout", "read_model_state", "load_base_state"]


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


_DROPOUT_ATTRS = ("dropout", "attention_dropout", "attn_dropout", "hidden_dropout",
                  "activation_dropout", "resid_dropout", "embd_dropout", "dropout_p",
                  "attn_pdrop", "resid_pdrop", "embd_pdrop", "summary_first_dropout")


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout of ``model`` to 0, in place; returns it.

    ``nn.Dropout`` modules get ``p = 0`` (as TRL's ``disable_dropout_in_model``), and the
    float rates that attention code applies functionally (OPT's ``self.dropout``,
    ``attention_dropout``, ...) are zeroed on the modules and in the config, so a model in
    train mode (gradient checkpointing) computes what it computes in eval mode.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in _DROPOUT_ATTRS:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    cfg = getattr(model, "config", None)
    for name in dir(cfg) if cfg is not None else ():
        if ("dropout" in name or name.endswith("pdrop")) and isinstance(
                getattr(cfg, name, None), float):
            setattr(cfg, name, 0.0)
    return model


def read_model_state(folder: Path, model_type: str) -> dict[str, torch.Tensor]:
    """The state dict of the model saved in ``folder`` (safetensors), which must be a
    ``model_type`` model whose weights match their config; a :class:`DataError` otherwise."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf_env.progress import quiet_transformers

    if not folder.is_dir():
        raise DataError(f"no saved model at {folder}")
    cfg = AutoConfig.from_pretrained(str(folder))
    if cfg.model_type != model_type:
        raise DataError(f"{folder} holds a {cfg.model_type!r} model; this policy is a "
                        f"{model_type!r} model")
    with quiet_transformers():
        other, info = AutoModelForCausalLM.from_pretrained(
            str(folder), use_safetensors=True, output_loading_info=True)
    bad = {k: sorted(v) for k, v in info.items()
           if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise DataError(f"the weights in {folder} do not match their config: "
                        + "; ".join(f"{k.replace('_', ' ')} {v[:5]}" for k, v in bad.items()))
    return other.state_dict()


def load_base_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Copy ``state`` into ``model``'s base weights (a LoRA slot's ``base_layer`` names
    mapped back), strictly: a missing, unexpected or misshapen tensor is a DataError."""
    own = model.state_dict()
    names = {k.replace(".base_layer.", "."): k for k in own if ".lora_" not in k}
    missing, unexpected = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    if missing or unexpected:
        raise DataError(
            f"the weights in {where} do not fit this policy's model: missing "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    with torch.no_grad():
        for name, value in state.items():
            target = own[names[name]]
            if target.shape != value.shape:
                raise DataError(f"the weights in {where}: {name} has shape "
                                f"{tuple(value.shape)}, this model needs {tuple(target.shape)}")
            target.copy_(value.to(target.dtype))
