"""One run of one agent on one env with one seed, in its own folder.

``runs/<env>/<agent>/seed<S>/`` holds:

* ``config.yml``    the resolved run config (:class:`~agents.zoo.config.RunConfig`);
* ``command.txt``   the command line of every session that worked on the run;
* ``metrics.jsonl`` every scalar logged (``train/``, ``eval/``, ``oracle/``), one JSON per line;
* ``tensorboard/``  the same scalars as TensorBoard events (or under ``--tensorboard-log``);
* ``checkpoint/``   per-iteration pairs and policies, for agents that checkpoint;
* ``ledger.jsonl``  one line per session: the queries it paid for, its wall time, how it ended;
* ``policy/`` and ``agent.json``  the final policy (safetensors) and hyperparameters;
* ``eval.json``     :func:`rlhf_env.evaluate` of the final policy, plus the queries paid
  over all sessions and the total wall time. Its presence marks the run complete.

An interrupted run (Ctrl-C, or SIGTERM under the command) records its session
in the ledger; ``resume=True`` continues from the last checkpoint, and pairs
already paid for are read back rather than queried again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agents.base import RunLogger
from agents.zoo.config import RunConfig
from rlhf_env.errors import InvalidArgumentError, RLHFEnvError

__all__ = ["RunExistsError", "run_dir", "train_run", "evaluate_run", "read_eval"]


class RunExistsError(RLHFEnvError, FileExistsError):
    """The run folder exists and neither resume nor overwrite was asked for."""


def run_dir(runs: str | Path, env_id: str, agent: str, seed: int) -> Path:
    return Path(runs) / env_id / agent / f"seed{seed}"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    tmp.replace(path)


def _read_ledger(folder: Path) -> list[dict[str, Any]]:
    f = folder / "ledger.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines() if line] if f.is_file() else []


def read_eval(folder: str | Path) -> dict[str, Any] | None:
    f = Path(folder) / "eval.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _prepare(folder: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> bool:
    """Make the folder ready; returns whether there is earlier work to continue."""
    if folder.exists() and any(folder.iterdir()):
        if overwrite:
            shutil.rmtree(folder)
        elif resume:
            stored = RunConfig.from_dict(yaml.safe_load((folder / "config.yml").read_text()))
            if stored != cfg:
                diff = [f.name for f in dataclasses.fields(cfg)
                        if getattr(stored, f.name) != getattr(cfg, f.name)]
                raise InvalidArgumentError(
                    f"{folder} holds a run with a different config (differs in {diff}); "
                    "resume it with the same options, or pass --overwrite to start again")
            return True
        else:
            raise RunExistsError(
                f"{folder} exists; pass --resume to continue that run or --overwrite to start again")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return False


def _make(cfg: RunConfig) -> Any:
    import rlhf_env

    return rlhf_env.make(cfg.env_id, **cfg.make_env_kwargs())


def _evaluate(policy: Any, env: Any, cfg: RunConfig, final: bool = True) -> dict[str, float]:
    import rlhf_env

    if env.unwrapped.instance.exact:
        return rlhf_env.evaluate(policy, env)
    options = dict(cfg.eval)
    if not final:  # during training skip pi0's best-of-n reference points (they do not change)
        options["best_of_n"] = ()
    return rlhf_env.evaluate(policy, env, **options)


def train_run(cfg: RunConfig, runs: str | Path = "runs", *, resume: bool = False,
              overwrite: bool = False, tensorboard_log: str | Path | None = None,
              progress: bool | None = None, command: str = "",
              callback: Callable[[Any, dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    """Train (or finish) one run and return its ``eval.json``; see the module docstring."""
    import agents

    folder = run_dir(runs, cfg.env_id, cfg.agent, cfg.seed)
    continuing = _prepare(folder, cfg, resume, overwrite)
    if continuing and (done := read_eval(folder)) is not None:
        return done
    with (folder / "command.txt").open("a") as f:
        f.write(command + "\n")
    ledger = _read_ledger(folder)
    paid_before = sum(s["queries_used"] for s in ledger)
    wall_before = sum(s["wall_s"] for s in ledger)

    env = _make(cfg)
    cls = agents.get(cfg.agent)
    ckpt = folder / "checkpoint"
    agent = cls(env, **cfg.hyperparams, seed=cfg.seed, progress=progress,
                checkpoint_dir=str(ckpt))
    tb = (Path(tensorboard_log) / cfg.env_id / cfg.agent / f"seed{cfg.seed}" if tensorboard_log
          else folder / "tensorboard")
    agent.logger = RunLogger(tb, jsonl=folder / "metrics.jsonl")

    def on_iteration(a: Any, info: dict[str, Any]) -> Any:
        t = int(info.get("iteration", 0))
        if cfg.eval_every and (t + 1) % cfg.eval_every == 0:
            m = _evaluate(a.policy, env, cfg, final=False)
            a.logger.log({**{f"eval/{k}": v for k, v in m.items() if "/" not in k},
                          "oracle/queries_paid": paid_before + env.unwrapped.queries_used,
                          "train/iteration": t}, a.global_step)
        return callback(a, info) if callback is not None else None

    start, status = time.perf_counter(), "interrupted"
    try:
        if not continuing and cfg.eval_every:  # pi0's point on the objective-vs-queries curve
            m = _evaluate(env.unwrapped.reference, env, cfg, final=False)
            agent.logger.log({**{f"eval/{k}": v for k, v in m.items() if "/" not in k},
                              "oracle/queries_paid": 0}, 0)
        resume_from = (ckpt if continuing and cls.resumable and (ckpt / "state.json").is_file()
                       else None)
        agent.learn(on_iteration, resume_from=resume_from)
        status = "done"
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else f"failed: {e!r}"
        raise
    finally:
        wall = time.perf_counter() - start
        with (folder / "ledger.jsonl").open("a") as f:
            f.write(json.dumps({"session": len(ledger), "queries_used": env.unwrapped.queries_used,
                                "wall_s": wall, "status": status, "time": time.time()}) + "\n")
        agent.logger.close()
    agent.save(folder)
    result: dict[str, Any] = dict(_evaluate(agent.policy, env, cfg))
    result.update({"queries_used": paid_before + env.unwrapped.queries_used,
                   "query_budget": env.unwrapped.query_budget, "wall_s": wall_before + wall,
                   "sessions": len(ledger) + 1, "env_id": cfg.env_id, "agent": cfg.agent,
                   "seed": cfg.seed})
    _write_json(folder / "eval.json", result)
    return result


def evaluate_run(folder: str | Path, **eval_options: Any) -> dict[str, Any]:
    """Re-evaluate the stored policy of a run (``eval.json`` is rewritten, run facts kept)."""
    from rlhf_env.policies import load_policy

    folder = Path(folder)
    if not (folder / "config.yml").is_file() or not (folder / "policy").is_dir():
        raise InvalidArgumentError(
            f"{folder} is not a finished run folder (it needs config.yml and policy/)")
    cfg = RunConfig.from_dict(yaml.safe_load((folder / "config.yml").read_text()))
    cfg.eval = {**cfg.eval, **eval_options}
    env = _make(cfg)
    metrics = _evaluate(load_policy(folder / "policy"), env, cfg)
    old = read_eval(folder) or {}
    keep = {k: old[k] for k in ("queries_used", "query_budget", "wall_s", "sessions", "env_id",
                                "agent", "seed") if k in old}
    result = {**metrics, **keep}
    _write_json(folder / "eval.json", result)
    return result
