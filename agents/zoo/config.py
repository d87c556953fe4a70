"""Run configs: what defines one run of one agent on one env with one seed.

The YAML files (``zoo_configs/<agent>.yml``) are read by :mod:`agents.hyperparams`, the
same resolution ``agents.make`` uses: ``default`` < the env's kind < the env's id < the
command line's overrides. Keys map one-to-one onto the agent's hyperparameters, plus the
run-level keys below. An unknown key is an error naming it.

Run-level keys:

* ``setting``: "offline" | "online" | "hybrid" (default: the env's own default);
* ``query_budget``: the env's query budget (default: the env's own);
* ``oracle``: the training oracle, a preset name (default: the env's, ``"bt"``);
* ``env_kwargs``: a mapping of further keyword arguments to ``rlhf_env.make``;
* ``eval``: a mapping of options to ``rlhf_env.evaluate`` (sampled envs only);
* ``eval_every``: evaluate after every k-th iteration during training (0: only
  at the end); the results go to TensorBoard under ``eval/``;
* ``resources``: what one run needs when runs are Ray tasks (``--workers``), e.g.
  ``{num_cpus: 1, num_gpus: 1}``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agents.base import RUNTIME_KEYS
from agents.hyperparams import RUN_KEYS, resolve_entries, split_run_keys
from rlhf_env.cli_args import parse_key_values
from rlhf_env.errors import InvalidArgumentError, InvalidKwargError

__all__ = ["RUN_KEYS", "RunConfig", "resolve", "parse_overrides"]


@dataclasses.dataclass
class RunConfig:
    """Everything that defines one run: what ``config.yml`` in its folder records."""

    env_id: str
    agent: str
    seed: int
    setting: str | None = None
    query_budget: int | None = None
    oracle: str | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_every: int = 1
    resources: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not {"env_id", "agent", "seed"} <= set(d) or set(d) - fields:
            raise InvalidArgumentError(f"not a run config: {d!r:.200}")
        return cls(**d).check()

    def check(self) -> RunConfig:
        """Check the run-level values' types (the env and the agent check the rest); self."""
        from rlhf_env.instance import SETTINGS

        if self.setting is not None and self.setting not in SETTINGS:
            raise InvalidArgumentError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        for name in ("query_budget", "eval_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InvalidArgumentError(f"{name} must be an int >= 0, got {v!r}")
        if self.oracle is not None and not isinstance(self.oracle, str):
            raise InvalidArgumentError(f"oracle must be a preset name, got {self.oracle!r}")
        for name in ("env_kwargs", "hyperparams", "eval", "resources"):
            if not isinstance(getattr(self, name), dict):
                raise InvalidArgumentError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        for k, v in self.resources.items():
            if k not in ("num_cpus", "num_gpus") or isinstance(v, bool) or not isinstance(
                    v, (int, float)) or v < 0:
                raise InvalidArgumentError(
                    f"resources takes num_cpus and num_gpus (numbers >= 0), got {k}={v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative int, got {self.seed!r}")
        return self

    def make_env_kwargs(self) -> dict[str, Any]:
        kw = dict(self.env_kwargs)
        if self.setting is not None:
            kw["setting"] = self.setting
        if self.query_budget is not None:
            kw["query_budget"] = self.query_budget
        if self.oracle is not None:
            kw["oracle"] = self.oracle
        return {**kw, "seed": self.seed}

    def identity(self) -> dict[str, Any]:
        """What names this run, for its ledger and checkpoints: the env id, the agent, the
        seed, the oracle and a digest of everything the env is made with."""
        import hashlib
        import json

        kw = json.dumps(self.make_env_kwargs(), sort_keys=True, default=str)
        return {"env_id": self.env_id, "agent": self.agent, "seed": self.seed,
                "oracle": self.oracle or "bt",
                "env_kwargs": hashlib.sha256(kw.encode()).hexdigest()[:16]}


def resolve(agent: str, env_id: str, seed: int, *, hyperparams: dict[str, Any] | None = None,
            env_kwargs: dict[str, Any] | None = None, setting: str | None = None,
            oracle: str | None = None, directory: Path | None = None) -> RunConfig:
    """The run config of ``agent`` on ``env_id``: the YAML entries, then the overrides.

    ``hyperparams`` may hold agent keys and run-level keys; ``env_kwargs`` are merged into
    the file's ``env_kwargs``; ``setting`` and ``oracle`` win over both. The agent's
    hyperparameters are checked (types and ranges) here, before anything is made.
    """
    import agents
    import rlhf_env

    cls = agents.get(agent)
    kind = rlhf_env.spec(env_id).kind
    if kind is not None:  # before anything (pi0 of a language env) is built
        cls.check_kind(kind, env_id)
    valid = [k for k in [*cls.Config.field_names(), *cls.Config.ALIASES] if k not in RUNTIME_KEYS]
    merged = cls.Config.canonical(resolve_entries(agent, env_id, kind, valid=valid,
                                                  directory=directory))
    for k, v in cls.Config.canonical(hyperparams or {}).items():
        if k.partition(".")[0] in RUNTIME_KEYS:
            raise InvalidKwargError(
                f"{k!r} is set by the zoo for every run (--seed, --tensorboard-log, ...), "
                "not a hyperparameter")
        if k in ("env_kwargs", "eval", "resources") and isinstance(v, dict):
            merged[k] = {**merged.get(k, {}), **v}
        else:
            merged[k] = v
    if env_kwargs:
        merged["env_kwargs"] = {**merged.get("env_kwargs", {}), **env_kwargs}
    if setting is not None:
        merged["setting"] = setting
    if oracle is not None:
        merged["oracle"] = oracle
    agent_keys, run = split_run_keys(merged)
    for key in ("env_kwargs", "eval", "resources"):
        if not isinstance(run.get(key, {}), dict):
            raise InvalidArgumentError(f"{key} must be a mapping, got {run[key]!r}")
    cls.Config.from_dict(agent_keys, source=f"zoo_configs/{agent}.yml or the overrides")
    return RunConfig(env_id=env_id, agent=agent, seed=seed, hyperparams=agent_keys, **run).check()


def parse_overrides(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict (:func:`rlhf_env.cli_args.parse_key_values`: values read as
    YAML, a repeated key refused); ``--env-kwargs`` also refuses the keys the zoo sets itself."""
    out = parse_key_values(items, flag)
    if flag == "--env-kwargs":
        owned = {"seed": "--seed (train) or --seeds (leaderboard)", "oracle": "--oracle",
                 "ledger": "nothing: the zoo gives every run its own durable ledger",
                 "setting": "--setting"}
        taken = [k for k in out if k in owned]
        if taken:
            raise InvalidArgumentError(
                f"--env-kwargs {taken[0]}=... is set by the zoo itself, so that the run folder, "
                f"its config and the table agree; use {owned[taken[0]]}")
    return out
