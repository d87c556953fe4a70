"""One run of one agent on one env with one seed, in its own folder.

``runs/<env>/<agent>/seed<S>/`` holds:

* ``.rlhf-run``     the marker that makes the folder a run (``--overwrite`` deletes nothing else);
* ``run.lock`` and ``owner.json``  the exclusive lock of the process working on the run;
* ``config.yml``    the resolved run config (:class:`~agents.zoo.config.RunConfig`);
* ``command.txt``   the command line of every session that worked on the run;
* ``ledger.sqlite`` every answered query batch, committed before the agent saw it, and every
  session (:class:`rlhf_env.oracles.DurableLedger`): the run's budget holds across sessions
  and a resumed session is answered from it instead of paying again;
* ``metrics.jsonl`` every scalar logged (``train/``, ``eval/``, ``oracle/``), one JSON per line;
* ``tensorboard/``  the same scalars as TensorBoard events (or under ``--tensorboard-log``);
* ``checkpoint/``   per-round pairs and policies, with digests;
* ``policy/`` and ``agent.json``  the final policy (safetensors) and hyperparameters;
* ``eval.json``     :func:`rlhf_env.evaluate` of the final policy, plus the queries paid
  (read from the ledger) and the total wall time. Its presence marks the run complete.

Everything that can be wrong with a request — the env id (registered ids only, never a
path), the seed, the env's keyword arguments, the agent's hyperparameters, the evaluation
options — is checked by making the env and the agent *before* the folder is created or a
label is paid for. A killed run (even by SIGKILL) resumes with ``resume=True``: rounds
already checkpointed are read back, the labels of the interrupted round are answered again
from the ledger, and no label is bought twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.base import RunLogger
from agents.files import read_json, read_yaml, write_json, write_text
from agents.zoo.config import RunConfig
from rlhf_env.errors import DataError, InvalidArgumentError, RLHFEnvError

__all__ = ["RunExistsError", "RunLockedError", "MARKER", "run_dir", "train_run", "evaluate_run",
           "read_eval", "check_eval_options", "RunLock", "LocalBackend", "ServiceBackend",
           "clear_for_overwrite", "finished_earlier"]

MARKER = ".rlhf-run"
# may change on resume: they do not change what is learned
_NOT_RESUMABLE_DIFFS = {"eval", "eval_every", "resources"}


class RunExistsError(RLHFEnvError, FileExistsError):
    """The run folder exists and neither resume nor overwrite was asked for."""


class RunLockedError(RLHFEnvError, RuntimeError):
    """Another live process holds the run folder."""


def run_dir(runs: str | Path, env_id: str, agent: str, seed: Any,
            oracle: str | None = None) -> Path:
    """``runs/<env_id>/<agent>/seed<seed>`` (``runs/<env_id>+<oracle>/...`` for a training
    oracle other than the default), after checking each part (no path can escape)."""
    import agents
    import rlhf_env
    from rlhf_env.oracles import PRESETS, make_oracle

    env_id = rlhf_env.spec(env_id).id  # registered ids only: Name-vN, never a path
    agents.get(agent)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative int, got {seed!r}")
    if oracle is not None:
        make_oracle(oracle)  # a preset name (letters, digits, '-'), or a clear error
        if oracle not in PRESETS:
            raise InvalidArgumentError(f"oracle must be a preset name, got {oracle!r}")
    root = Path(runs)
    top = env_id if oracle in (None, "bt") else f"{env_id}+{oracle}"
    folder = root / top / agent / f"seed{seed}"
    if not folder.resolve().is_relative_to(root.resolve()):
        raise InvalidArgumentError(f"{folder} would lie outside --runs-dir {root}")
    return folder


def finished_earlier(cfg: RunConfig, runs: str | Path) -> Path | None:
    """The run folder of ``cfg`` if it already holds a finished run (which ``train_run`` with
    ``resume`` returns as it is), else None."""
    folder = run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle)
    return folder if (folder / "eval.json").is_file() else None


RECORD = "RECORD.json"
"""Digests of a run's ``config.yml``, ``eval.json`` and final ``policy/`` manifest."""
_CHECKED = ("objective", "gold_reward", "kl")


def record(folder: Path, *names: str) -> None:
    """Add (or renew) the digests of ``names`` (files of the run folder) in its record."""
    from agents.files import sha256_file

    f = folder / RECORD
    have = read_json(f) if f.is_file() else {}
    have.update({n: sha256_file(folder / n) for n in names})
    write_json(f, have)


def check_record(folder: Path, name: str) -> None:
    """Refuse ``name`` if it differs from the digest the run recorded for it."""
    from agents.files import sha256_file

    f = folder / RECORD
    have = read_json(f) if f.is_file() else {}
    if name not in have:
        raise DataError(f"{folder / name} has no digest in {f.name}: it was not written by the "
                        f"zoo (or by an older version); evaluate the run again (rlhf-zoo eval "
                        f"{folder}) or --overwrite")
    if sha256_file(folder / name) != have[name]:
        raise DataError(f"{folder / name} was changed after the run wrote it (its SHA-256 "
                        f"differs from {f.name}); evaluate the run again (rlhf-zoo eval {folder})")


def read_eval(folder: str | Path) -> dict[str, Any] | None:
    """The run's ``eval.json`` (None before it is finished), its digest and values checked:
    an edited file, or a metric that is missing or not finite, is a :class:`DataError`."""
    import math

    folder = Path(folder)
    f = folder / "eval.json"
    if not f.is_file():
        return None
    check_record(folder, "eval.json")
    result = read_json(f, f"Delete {f} to evaluate the run again.")
    bad = [k for k in _CHECKED if not isinstance(result.get(k), (int, float))
           or isinstance(result.get(k), bool) or not math.isfinite(result[k])]
    if bad:
        raise DataError(f"{f} lacks a finite {', '.join(bad)}: evaluate the run again")
    return result


def check_eval_options(env_id: str, options: dict[str, Any]) -> None:
    """Refuse evaluation options the env's evaluation does not take (exact envs take none)."""
    import rlhf_env
    from rlhf_env.evaluation import check_sampled_options

    if not options:
        return
    if rlhf_env.spec(env_id).kind in ("exact", "linear"):
        raise InvalidArgumentError(
            f"{env_id} is evaluated exactly: evaluation options {sorted(options)} do not apply")
    check_sampled_options(options)


class RunLock:
    """Exclusive ownership of a run folder (``run.lock``, with ``owner.json`` naming the holder).

    The lock is an OS file lock, so it dies with its process: a folder left by a killed
    process is free, and its stale ``owner.json`` is replaced.
    """

    def __init__(self, folder: Path, command: str = "") -> None:
        self.folder, self.command = folder, command
        self._lock: Any = None

    def __enter__(self) -> RunLock:
        import filelock

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.folder / "run.lock"), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            owner = self.folder / "owner.json"
            holder = "another process"
            if owner.is_file():
                try:
                    o = json.loads(owner.read_text())
                    holder = (f"process {o.get('pid')} on {o.get('host')} since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(o.get('since', 0)))}"
                              f" ({o.get('command') or 'no command recorded'})")
                except (OSError, ValueError):
                    pass
            raise RunLockedError(f"{self.folder} is in use by {holder}; wait for it to finish "
                                 "(or stop it) before training or resuming this run") from None
        self._lock = lock
        write_json(self.folder / "owner.json", {"pid": os.getpid(), "host": os.uname().nodename,
                                                "since": time.time(), "command": self.command})
        return self

    def __exit__(self, *exc: Any) -> None:
        (self.folder / "owner.json").unlink(missing_ok=True)
        self._lock.release()


def _check_folder(folder: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> bool:
    """Whether there is earlier work to continue; raise if the request does not fit the folder.

    Reads only: nothing is created or deleted here.
    """
    if resume and overwrite:
        raise InvalidArgumentError("pass --resume or --overwrite, not both")
    if not folder.exists() or not any(p.name not in ("run.lock", "owner.json")
                                      for p in folder.iterdir()):
        return False
    if not (folder / MARKER).is_file():
        raise RunExistsError(
            f"{folder} exists but is not a run folder (no {MARKER}); move it away: nothing in it "
            "is touched")
    if overwrite:
        return False
    if not resume:
        raise RunExistsError(
            f"{folder} exists; pass --resume to continue that run or --overwrite to start again")
    check_record(folder, "config.yml")
    stored = RunConfig.from_dict(read_yaml(folder / "config.yml"))
    diff = [f.name for f in dataclasses.fields(cfg)
            if getattr(stored, f.name) != getattr(cfg, f.name) and f.name not in _NOT_RESUMABLE_DIFFS]
    if diff:
        raise InvalidArgumentError(
            f"{folder} holds a run with a different config (differs in {diff}); resume it with "
            "the same options, or pass --overwrite to start again")
    return True


def clear_for_overwrite(folder: Path) -> None:
    """Empty a run folder ahead of ``--overwrite`` (only a folder with the run marker), under
    its lock; a folder that is not a run, or is in use, raises."""
    if not folder.exists():
        return
    if any(p.name not in ("run.lock", "owner.json") for p in folder.iterdir()) and not (
            folder / MARKER).is_file():
        raise RunExistsError(
            f"{folder} exists but is not a run folder (no {MARKER}); move it away: nothing in it "
            "is touched")
    with RunLock(folder, "overwrite"):
        _empty(folder)


def _empty(folder: Path) -> None:
    """Delete a run folder's contents (it holds the marker), keeping the lock we hold."""
    for child in folder.iterdir():
        if child.name in ("run.lock", "owner.json"):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def make_env(cfg: RunConfig, ledger: Any = None) -> Any:
    import rlhf_env

    kwargs = cfg.make_env_kwargs()
    if ledger is not None:
        kwargs["ledger"] = ledger
    return rlhf_env.make(cfg.env_id, **kwargs)


def _eval_options(env: Any, cfg: RunConfig, final: bool) -> dict[str, Any]:
    if env.unwrapped.instance.exact:
        return {}
    options = dict(cfg.eval)
    if not final:  # during training skip pi0's reference points (they do not change)
        options["best_of_n"] = ()
        options["optimal_samples"] = 0
    return options


def evaluate_policy(policy: Any, env: Any, cfg: RunConfig, final: bool = True) -> dict[str, float]:
    import rlhf_env

    return rlhf_env.evaluate(policy, env, **_eval_options(env, cfg, final))


class LocalBackend:
    """The env, its durable ledger (``<run>/ledger.sqlite``) and the judge in this process."""

    def __init__(self, cfg: RunConfig, folder: Path) -> None:
        import secrets

        from rlhf_env.oracles.ledger import DurableLedger

        self.cfg = cfg
        self.ledger = DurableLedger(folder / "ledger.sqlite", identity=cfg.identity())
        self.env = make_env(cfg, self.ledger)
        # the run is sealed: only this backend's evaluations reach the judge
        self._token = secrets.token_hex(16)
        self.ledger.seal(self._token)

    def open(self, command: str) -> None:
        self.ledger.open()
        self.ledger.begin_session(command=command)

    def end(self, status: str) -> None:
        self.ledger.end_session(status, self._token)

    def evaluate(self, policy: Any, final: bool = True) -> dict[str, float]:
        from rlhf_env.judging import unsealed

        with unsealed(self.env, self._token):
            return evaluate_policy(policy, self.env, self.cfg, final)

    def diagnose(self, reward_fn: Any, policy: Any) -> dict[str, float]:
        from rlhf_env.diagnostics import reward_diagnostics
        from rlhf_env.judging import unsealed

        with unsealed(self.env, self._token):
            return reward_diagnostics(reward_fn, policy, self.env)

    def counts(self) -> dict[str, int]:
        return {"used": self.ledger.used, "budget": self.ledger.budget,
                "replayed": self.ledger.replayed}

    def sessions(self) -> list[dict[str, Any]]:
        return self.ledger.sessions()

    def close(self) -> None:
        self.ledger.close()


class ServiceBackend:
    """The env is a view of an :class:`rlhf_env.service.OracleService` reached through
    ``client``: the oracle, the durable ledger and the judge live there (a sealed run: this
    process never holds the gold reward); evaluation happens there too."""

    def __init__(self, cfg: RunConfig, client: Any, token: str | None = None) -> None:
        from rlhf_env.service import connect

        self.cfg, self.client, self._token = cfg, client, token
        self.env = connect(client)
        self._view_ledger = self.env.unwrapped.ledger
        if token is not None:  # this process is sealed too while the run is in progress
            self._view_ledger.seal(token)

    def open(self, command: str) -> None:
        self.client.open_ledger(command)
        self._view_ledger.begin_session(command=command)

    def end(self, status: str) -> None:
        self._view_ledger.end_session(status, self._token)
        self.client.end_session(status)

    def evaluate(self, policy: Any, final: bool = True) -> dict[str, float]:
        return self.client.evaluate(policy, _eval_options(self.env, self.cfg, final),
                                    self._token)

    def diagnose(self, reward_fn: Any, policy: Any) -> dict[str, float]:
        return self.client.diagnose(reward_fn, policy, self._token)

    def counts(self) -> dict[str, int]:
        return self.client.counts()

    def sessions(self) -> list[dict[str, Any]]:
        return self.client.sessions()

    def close(self) -> None:
        pass


def _wall(sessions: list[dict[str, Any]], now: float) -> float:
    return float(sum((s["ended"] or now) - s["started"] for s in sessions))


def train_run(cfg: RunConfig, runs: str | Path = "runs", *, resume: bool = False,
              overwrite: bool = False, tensorboard_log: str | Path | None = None,
              progress: bool | None = None, command: str = "",
              callback: Callable[[Any, dict[str, Any]], Any] | None = None,
              service: Any = None, service_token: str | None = None) -> dict[str, Any]:
    """Train (or finish) one run and return its ``eval.json``; see the module docstring.

    The run is **sealed**: its env's judge answers only the harness's evaluations (a token
    the agent never sees; :func:`rlhf_env.judging.unsealed`), so ``rlhf_env.evaluate``,
    the diagnostics and the oracle report called from inside the agent are refused.

    ``service``: a client of an :class:`rlhf_env.service.OracleService` holding this run's
    env and ledger (a sealed run); None makes the env here.
    """
    import agents

    # ---- everything checked before anything is created or paid ------------------------------
    folder = run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle)
    check_eval_options(cfg.env_id, cfg.eval)
    if isinstance(cfg.eval_every, bool) or not isinstance(cfg.eval_every, int) or cfg.eval_every < 0:
        raise InvalidArgumentError(f"eval_every must be an int >= 0, got {cfg.eval_every!r}")
    continuing = _check_folder(folder, cfg, resume, overwrite)
    if continuing and (done := read_eval(folder)) is not None:
        return done
    backend = (ServiceBackend(cfg, service, service_token) if service is not None
               else LocalBackend(cfg, folder))
    env = backend.env
    cls = agents.get(cfg.agent)
    agent = cls(env, **cfg.hyperparams, seed=cfg.seed, progress=progress,
                checkpoint_dir=str(folder / "checkpoint"))

    # ---- the run folder, owned by this process ------------------------------------------------
    with RunLock(folder, command):
        continuing = _check_folder(folder, cfg, resume, overwrite)  # again, under the lock
        if continuing and (done := read_eval(folder)) is not None:
            return done
        if not continuing:
            _empty(folder)
            write_json(folder / MARKER, {"env_id": cfg.env_id, "agent": cfg.agent,
                                         "seed": cfg.seed, "created": time.time()})
            import yaml

            write_text(folder / "config.yml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            record(folder, "config.yml")
        with (folder / "command.txt").open("a") as f:
            f.write(command + "\n")
        tb = (Path(tensorboard_log) / cfg.env_id / cfg.agent / f"seed{cfg.seed}"
              if tensorboard_log else folder / "tensorboard")
        agent.logger = RunLogger(tb, jsonl=folder / "metrics.jsonl")
        agent.logger.text("config", "```\n" + json.dumps(cfg.to_dict(), indent=1) + "\n```")

        # the zoo's evaluations go to a writer of their own: the same files, never the
        # agent's logger (whose history the agent can read while it learns)
        evals = RunLogger(tb, jsonl=folder / "metrics.jsonl")

        def on_iteration(a: Any, info: dict[str, Any]) -> Any:
            t = int(info.get("iteration", 0))
            if cfg.eval_every and (t + 1) % cfg.eval_every == 0:
                m = backend.evaluate(a.policy, final=False)
                if a.reward_model is not None:  # over-optimisation: proxy vs gold
                    m.update(backend.diagnose(a.reward_model, a.policy))
                evals.log({**{f"eval/{k}": v for k, v in m.items() if "/" not in k},
                           "oracle/queries_paid": backend.counts()["used"]}, a.global_step)
            return callback(a, info) if callback is not None else None

        ckpt = folder / "checkpoint"
        resume_from = (ckpt if continuing and cls.resumable and (ckpt / "state.json").is_file()
                       else None)
        status = "interrupted"
        backend.open(command)  # the session (a run in progress) ends in the finally below
        try:
            if resume_from is None and cfg.eval_every:  # pi0's point on the queries curve
                m = backend.evaluate(env.unwrapped.reference, final=False)
                evals.log({**{f"eval/{k}": v for k, v in m.items() if "/" not in k},
                           "oracle/queries_paid": 0}, 0)
            agent.learn(on_iteration, resume_from=resume_from)
            status = "done"
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            status = f"failed: {type(e).__name__}: {e}"[:500]
            raise
        finally:
            backend.end(status)
            agent.logger.close()
            evals.close()
        agent.save(folder)
        from agents.files import write_manifest

        write_manifest(folder / "policy")
        result: dict[str, Any] = dict(backend.evaluate(agent.policy))
        if agent.reward_model is not None:
            result.update(backend.diagnose(agent.reward_model, agent.policy))
        sessions, counts = backend.sessions(), backend.counts()
        offline = agent.offline_labels_used
        result.update({"queries_used": counts["used"], "query_budget": counts["budget"],
                       "offline_labels": offline, "labels": offline + counts["used"],
                       "queries_replayed": counts["replayed"],
                       "wall_s": _wall(sessions, time.time()),
                       "sessions": len(sessions), "env_id": cfg.env_id, "agent": cfg.agent,
                       "seed": cfg.seed, "oracle": cfg.oracle or "bt",
                       "oracle_config": env.unwrapped.oracle_config})
        write_json(folder / "eval.json", result)
        record(folder, "eval.json")
        backend.close()
        final = RunLogger(tb)  # the HPARAMS tab: config beside the final metrics
        final.hparams({"env_id": cfg.env_id, "agent": cfg.agent, "seed": cfg.seed,
                       "oracle": cfg.oracle or "bt", "setting": cfg.setting or "default",
                       **cfg.hyperparams},
                      {f"hparam/{k}": result[k] for k in ("normalized_score", "objective",
                                                          "gold_reward", "kl", "labels")
                       if k in result})
        final.close()
    return result


def evaluate_run(folder: str | Path, **eval_options: Any) -> dict[str, Any]:
    """Re-evaluate the stored policy of a run (``eval.json`` is rewritten, run facts kept)."""
    from rlhf_env.policies import load_policy

    folder = Path(folder)
    if not (folder / MARKER).is_file() or not (folder / "policy").is_dir():
        raise InvalidArgumentError(
            f"{folder} is not a finished run folder (it needs {MARKER}, config.yml and policy/)")
    cfg = RunConfig.from_dict(read_yaml(folder / "config.yml"))
    check_eval_options(cfg.env_id, eval_options)
    cfg.eval = {**cfg.eval, **eval_options}
    env = make_env(cfg)
    from agents.files import verify_manifest

    check_record(folder, "config.yml")
    verify_manifest(folder / "policy", f"The run's final policy was changed; train it again "
                                       f"(--overwrite) ({folder})")
    metrics = evaluate_policy(load_policy(folder / "policy", base=env.unwrapped.reference), env, cfg)
    old = read_eval(folder) or {}
    keep = {k: old[k] for k in ("queries_used", "query_budget", "queries_replayed", "wall_s",
                                "sessions", "env_id", "agent", "seed", "oracle", "labels",
                                "offline_labels") if k in old}
    result = {**metrics, **keep}
    write_json(folder / "eval.json", result)
    record(folder, "eval.json")
    return result
