"""Typed hyperparameters, the agent registry, and the run logger.

Every agent's hyperparameters are a dataclass derived from :class:`AgentConfig`.
Values arrive from YAML, the command line or Python; :meth:`AgentConfig.from_dict`
checks each against its field's type (a bool is not an int, ``"no"`` is not a
bool, numbers must be finite), follows deprecated names to their new ones with a
warning, reads dotted keys into nested configs (``reward_model.steps=400``), and
refuses an unknown key naming the closest valid one. :meth:`AgentConfig.check`
then checks ranges; :meth:`AgentConfig.check_env` what depends on the env.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rlhf_env.errors import InvalidArgumentError, InvalidKwargError, closest

__all__ = ["TypedConfig", "AgentConfig", "LoraConfig", "RunLogger", "register_agent", "AGENTS",
           "check", "RUNTIME_KEYS", "check_language_only"]

AGENTS: dict[str, type] = {}

RUNTIME_KEYS = ("seed", "tensorboard_log", "run_name", "progress", "checkpoint_dir")
"""Fields of every config that say how to run, not what to learn (never in YAML files)."""


def register_agent(name: str) -> Callable[[type], type]:
    """Class decorator registering an agent under ``name`` for :func:`agents.make`."""

    def deco(cls: type) -> type:
        cls.name = name
        AGENTS[name] = cls
        return cls

    return deco


def check(cond: bool, message: str) -> None:
    """Raise :class:`InvalidArgumentError` with ``message`` unless ``cond``."""
    if not cond:
        raise InvalidArgumentError(message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type hint ``hint`` (and converted where lossless)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(name, value, a)
            except InvalidArgumentError as e:
                errors.append(str(e))
        raise InvalidArgumentError(errors[0] if len(errors) == 1 else
                                   f"{name} has the wrong type: {_short(value)}")
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if isinstance(value, str) and "kind" in hint.field_names():
            value = {"kind": value}  # shorthand: reward_model: neural
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"{name} must be a mapping of {hint.__name__} fields, "
                                       f"got {_short(value)}")
        return hint.from_dict(value, prefix=f"{name}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{name} must be true or false, got {_short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{name} must be an int, got {_short(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError(f"{name} must be a number, got {_short(value)}")
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{name} must be a string, got {_short(value)}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise InvalidArgumentError(f"{name} must be a list, got {_short(value)}")
        item = args[0] if args else Any
        return tuple(_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise InvalidArgumentError(f"{name} must be a mapping, got {_short(value)}")
        return dict(value)
    return value


@dataclasses.dataclass
class TypedConfig:
    """A dataclass of typed settings, built and checked by :meth:`from_dict`."""

    ALIASES: ClassVar[dict[str, str]] = {}
    """Deprecated name -> current name (accepted for one version, with a FutureWarning)."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def canonical(cls, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """``values`` with deprecated names replaced by current ones (a FutureWarning each);
        a name given both ways is an error."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            if not isinstance(key, str):
                raise InvalidKwargError(f"hyperparameter names are strings, got {key!r}")
            head, dot, rest = key.partition(".")
            if head in cls.ALIASES:
                new = cls.ALIASES[head]
                warnings.warn(f"hyperparameter {prefix}{head!r} is deprecated: use "
                              f"{prefix}{new!r}", FutureWarning, stacklevel=5)
                key = new + dot + rest
                if key in values:
                    raise InvalidKwargError(f"{prefix}{new} was given twice (once as {head!r})")
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, prefix: str = "", source: str = "") -> Any:
        """A checked config from ``values``; unknown keys raise :class:`InvalidKwargError`."""
        hints = typing.get_type_hints(cls)
        fields = cls.field_names()
        nested: dict[str, dict[str, Any]] = {}
        clean: dict[str, Any] = {}
        for key, value in cls.canonical(values, prefix).items():
            head, dot, rest = key.partition(".")
            if head not in fields:
                where = f" (from {source})" if source else ""
                raise InvalidKwargError(
                    f"unknown hyperparameter {prefix + head!r}{where}."
                    f"{closest(head, [*fields, *cls.ALIASES])} Valid: {', '.join(fields)}.")
            if dot:
                if not (dataclasses.is_dataclass(hints[head]) and isinstance(hints[head], type)):
                    raise InvalidKwargError(f"{prefix}{head} has no fields (got {key!r})")
                nested.setdefault(head, {})[rest] = value
            else:
                clean[head] = value
        for head, sub in nested.items():
            base = clean.get(head)
            if dataclasses.is_dataclass(base):
                base = base.to_dict()
            clean[head] = {**(base or {}), **sub}
        out = {k: _coerce(prefix + k, v, hints[k]) for k, v in clean.items()}
        config = cls(**out)
        config.check()
        return config

    def check(self) -> None:
        """Ranges and choices; raise :class:`InvalidArgumentError` saying what to change."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LoraConfig(TypedConfig):
    """A LoRA adapter (peft; ``pip install 'rlhf-env[lora]'``): rank ``r``, scale ``alpha``
    (the update is alpha / r * B A), ``target_modules`` (None: peft's default for the
    architecture; ``"all-linear"``; or module names). The trained policy is pi0's weights
    plus the adapter, and pi0 the same weights with it disabled: one copy in memory."""

    r: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] | str | None = None

    def check(self) -> None:
        self.settings()

    def settings(self) -> Any:
        """The :class:`rlhf_env.lm.lora.LoraSettings` these fields describe."""
        from rlhf_env.lm.lora import LoraSettings

        return LoraSettings(r=self.r, alpha=self.alpha, target_modules=self.target_modules)


def check_language_only(instance: Any, who: str, **settings: Any) -> None:
    """Refuse language-model-only settings (``lora``, ``gradient_checkpointing``, ...) on an
    exact env, and LoRA without peft, before anything is built or paid."""
    given = [k for k, v in settings.items() if v not in (None, False)]
    check(not given or not instance.exact,
          f"{who}: {', '.join(given)} applies to language-model policies; {instance.name} is an "
          f"{instance.kind} env (its policies are tables)")
    if settings.get("lora") is not None:
        from rlhf_env.lm.lora import require_peft

        require_peft(f"{who} with lora")


@dataclasses.dataclass
class AgentConfig(TypedConfig):
    """Base of every agent's hyperparameters; see the module docstring.

    Run-time fields (:data:`RUNTIME_KEYS`): ``seed`` (the agent's randomness),
    ``tensorboard_log`` and ``run_name`` (TensorBoard), ``progress`` (tqdm bars: None
    means only on a terminal), ``checkpoint_dir`` (per-round checkpoints).
    """

    seed: int = 0
    tensorboard_log: str | None = None
    run_name: str | None = None
    progress: bool | None = None
    checkpoint_dir: str | None = None
    # which iterate learn() returns (agents/select.py): "last", or "holdout": the best on a
    # held-out share of every round's paid pairs (the implicit reward's BT likelihood)
    select_iterate: str = "last"
    holdout_fraction: float = 0.1

    def check(self) -> None:
        check(self.seed >= 0, f"seed must be a non-negative int, got {self.seed!r}")
        check(self.select_iterate in ("last", "holdout"),
              f"select_iterate must be 'last' or 'holdout', got {self.select_iterate!r}")
        check(0.0 < self.holdout_fraction < 1.0,
              f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}")

    def check_env(self, instance: Any) -> None:
        """What depends on the env (its kind, budget, data); default: nothing."""

    def hyperparameters(self) -> dict[str, Any]:
        """The learning-relevant fields (everything but :data:`RUNTIME_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}


class RunLogger:
    """Scalars to TensorBoard (if a log dir is given) and to a ``metrics.jsonl``, one line each.

    Names are grouped ``train/``, ``eval/``, ``oracle/``.
    """

    def __init__(self, log_dir: str | Path | None, run_name: str | None = None,
                 jsonl: str | Path | None = None) -> None:
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            path = Path(log_dir) / run_name if run_name else Path(log_dir)
            self.writer = SummaryWriter(str(path))
        self.jsonl = Path(jsonl) if jsonl else None
        self.history: list[dict[str, Any]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": int(step), "time": time.time(),
               **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, float(v), int(step))
        if self.jsonl is not None:
            with self.jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def text(self, tag: str, text: str) -> None:
        """A text summary (e.g. the run's config) in TensorBoard."""
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def hparams(self, config: dict[str, Any], metrics: dict[str, float]) -> None:
        """The run's hyperparameters and final metrics in TensorBoard's HPARAMS tab (written
        into this run's own event file, so runs compare side by side)."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}{k}.", v)
            elif isinstance(value, (bool, int, float, str)):
                flat[prefix[:-1]] = value
            elif value is not None:
                flat[prefix[:-1]] = str(value)

        walk("", config)
        exp, ssi, sei = hparams(flat, {k: float(v) for k, v in metrics.items()})
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)
        for k, v in metrics.items():
            self.writer.add_scalar(k, float(v))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
