"""The Agent interface: construction from typed hyperparameters, ``learn``, ``save``/``load``.

An agent reads the public parts of ``env.unwrapped`` (reference, eta,
offline_dataset, train_prompts, features where the env is linear) and gets
feedback only by stepping the env. It never reads the gold reward.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rlhf_env.errors import InvalidArgumentError, InvalidKwargError, closest
from rlhf_env.policies import Policy, load_policy

__all__ = ["Agent", "AgentConfig", "RunLogger", "Callback", "register_agent", "AGENTS"]

AGENTS: dict[str, type[Agent]] = {}

Callback = Callable[["Agent", dict[str, Any]], Any]
"""``callback(agent, info)``, called after each iteration; return False to stop early."""


def register_agent(name: str) -> Callable[[type[Agent]], type[Agent]]:
    """Class decorator registering an agent under ``name`` for :func:`agents.make`."""

    def deco(cls: type[Agent]) -> type[Agent]:
        cls.name = name
        AGENTS[name] = cls
        return cls

    return deco


@dataclasses.dataclass
class AgentConfig:
    """Base of every agent's hyperparameters (a dataclass; checked in ``validate``)."""

    seed: int = 0
    tensorboard_log: str | None = None
    run_name: str | None = None
    progress: bool | None = None  # tqdm bars: None = only on a terminal

    def validate(self, env: Any) -> None:
        """Raise :class:`InvalidArgumentError` saying what to change."""
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative int, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check(cond: bool, message: str) -> None:
    """Raise :class:`InvalidArgumentError` with ``message`` unless ``cond``."""
    if not cond:
        raise InvalidArgumentError(message)


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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


class Agent:
    """Base class. Subclasses set ``Config`` and implement :meth:`learn`.

    Args:
        env: an env made by :func:`rlhf_env.make` (or its ``unwrapped``).
        **hparams: fields of the agent's ``Config`` dataclass; an unknown name is an error.
    """

    name: ClassVar[str] = "agent"
    Config: ClassVar[type[AgentConfig]] = AgentConfig
    description: ClassVar[str] = ""

    def __init__(self, env: Any, **hparams: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.Config)}
        unknown = [k for k in hparams if k not in fields]
        if unknown:
            raise InvalidKwargError(
                f"agent {self.name!r} got unknown hyperparameter(s) {unknown}."
                f"{closest(unknown[0], fields)} Valid: {', '.join(sorted(fields))}."
            )
        self.env = env
        self.u = env.unwrapped
        self.config = self.Config(**hparams)
        self.config.validate(self.u)
        self.policy: Policy = self.u.reference
        self.logger = RunLogger(self.config.tensorboard_log, self.config.run_name)
        self.global_step = 0
        self.queries_spent = 0

    # -- helpers for subclasses -----------------------------------------------------------
    def generator(self, *tags: int) -> torch.Generator:
        """A torch generator seeded by (seed, *tags): reproducible across resumes."""
        ss = np.random.SeedSequence([self.config.seed, *tags])
        return torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))

    def seed_for(self, *tags: int) -> int:
        ss = np.random.SeedSequence([self.config.seed, *tags])
        return int(ss.generate_state(1, np.uint32)[0])

    @property
    def progress_disabled(self) -> bool | None:
        p = self.config.progress
        return None if p is None else not p

    # -- the interface -------------------------------------------------------------------------
    def learn(self, callback: Callback | None = None, resume_from: str | Path | None = None) -> Agent:
        """Train; returns self. ``callback(agent, info)`` runs after each iteration."""
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Save the policy (safetensors) and the hyperparameters (JSON) in folder ``path``."""
        from rlhf_env.policies import FinitePolicy, TabularPolicy
        from rlhf_env.policies.base import _POLICY_CLASSES

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        policy = self.policy
        if isinstance(policy, FinitePolicy) and type(policy).__name__ not in _POLICY_CLASSES:
            policy = TabularPolicy.from_policy(policy)  # the same distribution, loadable
        policy.save(path / "policy")
        meta = {"agent": self.name, "config": self.config.to_dict(),
                "global_step": self.global_step, "queries_spent": self.queries_spent}
        (path / "agent.json").write_text(json.dumps(meta, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, env: Any) -> Agent:
        """Rebuild an agent saved by :meth:`save` on ``env`` (its policy restored, not retrained)."""
        path = Path(path)
        meta = json.loads((path / "agent.json").read_text())
        agent_cls = AGENTS.get(meta["agent"], cls)
        agent = agent_cls(env, **meta["config"])
        agent.policy = load_policy(path / "policy")
        agent.global_step = meta.get("global_step", 0)
        agent.queries_spent = meta.get("queries_spent", 0)
        return agent
