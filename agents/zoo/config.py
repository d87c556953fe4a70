"""Zoo configs: ``zoo_configs/<agent>.yml``, keyed by env id, with a ``default`` entry.

As in rl-baselines3-zoo, a file holds one mapping per env id; an agent run on
``env_id`` takes the ``default`` entry overlaid with the ``env_id`` entry, then
the command line's overrides. Keys map one-to-one onto the agent's constructor
arguments, plus the run-level keys below. An unknown key is an error naming it.

Run-level keys:

* ``setting``: "offline" | "online" | "hybrid" (default: the env's own default);
* ``query_budget``: the env's query budget (default: the env's own);
* ``env_kwargs``: a mapping of further keyword arguments to ``rlhf_env.make``;
* ``eval``: a mapping of options to ``rlhf_env.evaluate`` (sampled envs only);
* ``eval_every``: evaluate after every k-th iteration during training (0: only
  at the end); the results go to TensorBoard under ``eval/``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from rlhf_env.errors import InvalidArgumentError, InvalidKwargError, closest

__all__ = ["RUN_KEYS", "RunConfig", "config_dir", "load_file", "resolve", "parse_overrides"]

RUN_KEYS = ("setting", "query_budget", "env_kwargs", "eval", "eval_every")


@dataclasses.dataclass
class RunConfig:
    """Everything that defines one run: what ``config.yml`` in its folder records."""

    env_id: str
    agent: str
    seed: int
    setting: str | None = None
    query_budget: int | None = None
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_every: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**d)

    def make_env_kwargs(self) -> dict[str, Any]:
        kw = dict(self.env_kwargs)
        if self.setting is not None:
            kw["setting"] = self.setting
        if self.query_budget is not None:
            kw["query_budget"] = self.query_budget
        return {**kw, "seed": self.seed}


def config_dir() -> Path:
    """Where the YAML files are: ``$RLHF_ZOO_CONFIGS``, else ``zoo_configs/`` of this checkout."""
    env = os.environ.get("RLHF_ZOO_CONFIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "zoo_configs"


def load_file(path: Path) -> dict[str, dict[str, Any]]:
    """Parse one YAML file: a mapping of env id (or ``default``) to a mapping of keys."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InvalidArgumentError(f"{where}: the YAML does not parse: {e.problem or e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise InvalidArgumentError(
            f"{path}: must map env ids (and 'default') to mappings of hyperparameters")
    return {str(k): dict(v or {}) for k, v in data.items()}


def resolve(agent: str, env_id: str, seed: int, *, hyperparams: dict[str, Any] | None = None,
            env_kwargs: dict[str, Any] | None = None, setting: str | None = None,
            directory: Path | None = None) -> RunConfig:
    """The run config of ``agent`` on ``env_id``: file ``default`` < file ``env_id`` < overrides.

    ``hyperparams`` may hold agent keys and run-level keys; ``env_kwargs`` are
    merged into the file's ``env_kwargs``; ``setting`` wins over both.
    """
    import agents

    cls = agents.get(agent)
    path = (directory or config_dir()) / f"{agent}.yml"
    entries = load_file(path) if path.is_file() else {}
    merged: dict[str, Any] = copy.deepcopy(entries.get("default", {}))
    for k, v in copy.deepcopy(entries.get(env_id, {})).items():
        if k in ("env_kwargs", "eval") and isinstance(v, dict):
            merged[k] = {**merged.get(k, {}), **v}
        else:
            merged[k] = v
    merged.update(hyperparams or {})
    if env_kwargs:
        merged["env_kwargs"] = {**merged.get("env_kwargs", {}), **env_kwargs}
    if setting is not None:
        merged["setting"] = setting

    fields = {f.name for f in dataclasses.fields(cls.Config)}
    reserved = {"seed", "tensorboard_log", "run_name", "progress", "checkpoint_dir"}
    valid = (fields - reserved) | set(RUN_KEYS)
    unknown = sorted(k for k in merged if k not in valid)
    if unknown:
        source = f"{path} (entries 'default'/{env_id!r})" if path.is_file() else "the overrides"
        raise InvalidKwargError(
            f"agent {agent!r} does not take {', '.join(map(repr, unknown))} (from {source})."
            f"{closest(unknown[0], valid)} Valid keys: {', '.join(sorted(valid))}.")
    for key in ("env_kwargs", "eval"):
        if not isinstance(merged.get(key, {}), dict):
            raise InvalidArgumentError(f"{key} must be a mapping, got {merged[key]!r}")
    run = {k: merged.pop(k) for k in RUN_KEYS if k in merged}
    return RunConfig(env_id=env_id, agent=agent, seed=int(seed), hyperparams=merged, **run)


def parse_overrides(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict; each value is read as YAML (``3``, ``0.1``, ``true``, ``[1, 2]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{flag} expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise InvalidArgumentError(f"{flag} {item!r}: the value does not parse: {e}") from e
    return out
