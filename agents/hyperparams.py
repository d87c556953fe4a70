"""Hyperparameters from ``zoo_configs/<agent>.yml``: one source for ``agents.make`` and the zoo.

As in rl-baselines3-zoo, a file maps entries to mappings of keys:

* ``default``: every env;
* ``exact``, ``linear``, ``sampled``: envs of that declared kind (a linear env takes
  the ``exact`` entry, then the ``linear`` one) — e.g. learning rates that suit
  tabular policies or language models;
* an env id (``LinearBT-v0``): that env.

The resolved values are ``default`` < kind entries < the env id's entry < the
caller's overrides. Keys are the agent's hyperparameters (its config's fields)
plus the zoo's run-level keys (:data:`RUN_KEYS`), which configure the env and the
run and may appear only in ``default`` and env-id entries. An unknown key, a
missing file or a file that does not parse is an error naming it; the files ship
with the package (the ``zoo_configs`` package) and ``$RLHF_ZOO_CONFIGS`` points
elsewhere.
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rlhf_env.errors import DataError, InvalidArgumentError, InvalidKwargError, closest

__all__ = ["RUN_KEYS", "KIND_ENTRIES", "ENV_VAR", "config_dir", "config_file", "load_file",
           "resolve_entries", "split_run_keys"]

ENV_VAR = "RLHF_ZOO_CONFIGS"
RUN_KEYS = ("setting", "query_budget", "oracle", "env_kwargs", "eval", "eval_every", "resources")
"""Zoo keys that configure the env and the run rather than the agent."""
KIND_ENTRIES = {"exact": ("exact",), "linear": ("exact", "linear"), "sampled": ("sampled",)}
_MERGED = ("env_kwargs", "eval", "resources")  # mapping-valued keys: entries merge them key by key


def config_dir() -> Path:
    """The folder of the YAML files: ``$RLHF_ZOO_CONFIGS``, else the installed ``zoo_configs``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(str(resources.files("zoo_configs")))


def config_file(agent: str, directory: Path | None = None) -> Path:
    """``<dir>/<agent>.yml``; a missing file is an error (never an empty config)."""
    folder = directory or config_dir()
    path = folder / f"{agent}.yml"
    if not path.is_file():
        raise DataError(
            f"no zoo config for agent {agent!r}: {path} is missing. Every agent has one "
            f"(zoo_configs/{agent}.yml in the package); set ${ENV_VAR} to a folder that holds it.")
    return path


def load_file(path: Path) -> dict[str, dict[str, Any]]:
    """Parse one YAML file: a mapping of entry names to mappings of keys."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise InvalidArgumentError(f"{where}: the YAML does not parse: {e.problem or e}") from e
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None
                                             for v in data.values()):
        raise InvalidArgumentError(
            f"{path}: must map entries ('default', a kind, env ids) to mappings of keys")
    return {str(k): dict(v or {}) for k, v in data.items()}


def _merge(into: dict[str, Any], entry: dict[str, Any]) -> None:
    for k, v in copy.deepcopy(entry).items():
        if k in _MERGED and isinstance(v, dict) and isinstance(into.get(k), dict):
            into[k] = {**into[k], **v}
        else:
            into[k] = v


def resolve_entries(agent: str, env_id: str | None, kind: str | None, *,
                    valid: list[str], directory: Path | None = None) -> dict[str, Any]:
    """The merged YAML values for ``agent`` on ``env_id`` of ``kind`` (no overrides).

    ``valid`` lists the agent's hyperparameter names; keys outside ``valid`` and
    :data:`RUN_KEYS` raise :class:`InvalidKwargError` naming the file and entry.
    """
    path = config_file(agent, directory)
    entries = load_file(path)
    names = ["default", *KIND_ENTRIES.get(kind or "", ()), *([env_id] if env_id else [])]
    merged: dict[str, Any] = {}
    for name in names:
        entry = entries.get(name, {})
        allowed = set(valid) | (set(RUN_KEYS) if name not in KIND_ENTRIES else set())
        unknown = sorted(k for k in entry if k.partition(".")[0] not in allowed)
        if unknown:
            raise InvalidKwargError(
                f"{path}, entry {name!r}: {agent!r} does not take {', '.join(map(repr, unknown))}."
                f"{closest(unknown[0], sorted(allowed))} Valid keys: {', '.join(sorted(allowed))}"
                + (" (run-level keys belong in 'default' or an env id entry)"
                   if name in KIND_ENTRIES else "") + ".")
        _merge(merged, entry)
    return merged


def split_run_keys(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(agent hyperparameters, run-level keys)`` of a merged mapping."""
    run = {k: values[k] for k in RUN_KEYS if k in values}
    return {k: v for k, v in values.items() if k not in RUN_KEYS}, run
