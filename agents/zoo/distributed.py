"""Leaderboards on Ray: every (agent, seed) run as a task, on a local instance or a cluster.

``rlhf-zoo leaderboard ... --workers N`` starts a local Ray instance with N CPUs for the
command; ``--address auto`` (or ``ray://host:port``) attaches to a running cluster
instead. Each task is :func:`run_job`: the same :func:`~agents.zoo.run.train_run` as a
sequential leaderboard, with its run folder, resume and TensorBoard logs, so the merged
table is the same. A task whose worker dies is retried by Ray and resumes: rounds already
checkpointed are read back and paid labels are answered again from the run's ledger,
never bought twice. The run folders must be on a file system every node sees.

With ``--oracle-service`` each run's env — its oracle, its durable ledger and the judge's
gold side — lives in a Ray actor (:class:`rlhf_env.service.OracleService`, optionally on a
GPU with ``--oracle-gpus``); the task's process holds only a view of it that labels
through the actor: it never loads the gold reward or theta*.

Resources per task come from the zoo config's run-level ``resources`` key
(``{num_cpus: 1, num_gpus: 0}`` by default). Ray is an optional dependency
(``pip install -e ".[distributed]"``), imported only here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agents.zoo.config import RunConfig
from agents.zoo.run import clear_for_overwrite, run_dir, train_run
from rlhf_env.errors import InvalidArgumentError

__all__ = ["require_ray", "RayClient", "run_job", "run_jobs", "oracle_service",
           "longest_first"]

log = logging.getLogger("agents")


def require_ray() -> Any:
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise InvalidArgumentError(
            "--workers/--address need Ray: pip install -e \".[distributed]\" (or pip install "
            f"ray) ({e})") from e
    return ray


class RayClient:
    """A synchronous client of an :class:`~rlhf_env.service.OracleService` Ray actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        try:
            return ray.get(getattr(self.handle, method).remote(*args))
        except ray.exceptions.RayTaskError as e:
            from rlhf_env.errors import RLHFEnvError

            if isinstance(e.cause, RLHFEnvError):  # the same error as in process
                raise e.cause from None
            raise

    def public(self) -> Any:
        return self._call("public")

    def settle(self, kind: str, prompts: list[str], responses: list[list[str]],
               rng_state: dict[str, Any] | None) -> Any:
        return self._call("settle", kind, prompts, responses, rng_state)

    def counts(self) -> dict[str, int]:
        return self._call("counts")

    def evaluate(self, policy: Any, options: dict[str, Any], token: str | None = None
                 ) -> dict[str, float]:
        return self._call("evaluate", policy, options, token)

    def diagnose(self, reward_fn: Any, policy: Any, token: str | None = None
                 ) -> dict[str, float]:
        return self._call("diagnose", reward_fn, policy, token)

    def open_ledger(self, command: str) -> int:
        return self._call("open_ledger", command)

    def end_session(self, status: str) -> None:
        self._call("end_session", status)

    def sessions(self) -> list[dict[str, Any]]:
        return self._call("sessions")


def oracle_service(cfg: RunConfig, runs: str, num_gpus: float = 0.0,
                   token: str | None = None) -> Any:
    """A Ray actor holding ``cfg``'s env, with its durable ledger in the run folder (sealed
    with ``token``: its evaluations answer only with it)."""
    ray = require_ray()
    from rlhf_env.service import OracleService

    ledger = run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle) / "ledger.sqlite"
    actor = ray.remote(OracleService).options(num_cpus=0, num_gpus=num_gpus)
    return actor.remote(cfg.env_id, cfg.make_env_kwargs(), str(ledger), cfg.identity(), token)


def run_job(cfg_dict: dict[str, Any], runs: str, tensorboard_log: str | None, command: str,
            sealed: bool = False, oracle_gpus: float = 0.0) -> dict[str, Any]:
    """One (agent, seed) run, as a Ray task runs it (always ``resume``: a retry continues).

    ``sealed``: the env lives in an oracle-service actor this task starts (and that dies
    with it); this process only holds a view.
    """
    import secrets

    cfg = RunConfig.from_dict(cfg_dict)
    token = secrets.token_hex(16) if sealed else None
    client = RayClient(oracle_service(cfg, runs, oracle_gpus, token)) if sealed else None
    return train_run(cfg, runs, resume=True, tensorboard_log=tensorboard_log, progress=False,
                     command=command, service=client, service_token=token)


def measured_wall(cfg: RunConfig, runs: str) -> float | None:
    """The median ``wall_s`` of finished runs of ``cfg``'s agent, env and oracle under
    ``runs`` (any seed), or None when there is none."""
    import statistics

    from agents.files import read_json

    walls = []
    for done in run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle).parent.glob(
            "seed*/eval.json"):
        try:
            walls.append(float(read_json(done)["wall_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return statistics.median(walls) if walls else None


def longest_first(jobs: list[RunConfig], runs: str) -> list[RunConfig]:
    """``jobs`` with the costliest first (ties keep their order): the longest-processing-time
    rule, so that the last job to finish is a short one. The cost is the measured wall time
    of earlier runs of the same agent when every agent has one (:func:`measured_wall`),
    else each agent's ``relative_cost`` hint."""
    import agents

    one = {c.agent: c for c in jobs}  # a config per agent: its runs are scanned once
    measured = {a: measured_wall(c, runs) for a, c in one.items()}
    if all(v is not None for v in measured.values()):
        cost = measured
    else:
        cost = {a: float(agents.get(a).relative_cost) for a in measured}
    return sorted(jobs, key=lambda c: -cost[c.agent])


def run_jobs(jobs: list[RunConfig], *, runs: str, overwrite: bool = False,
             tensorboard_log: Any = None, command: str = "", workers: int = 2,
             address: str | None = None, progress: bool | None = None, sealed: bool = False,
             oracle_gpus: float = 0.0, max_retries: int = 2
             ) -> list[tuple[RunConfig, Any, str | None]]:
    """Run ``jobs`` as Ray tasks; returns ``(config, eval.json or None, error or None)`` each,
    in the order they finish (one log line each, with the run's wall time)."""
    ray = require_ray()
    from rlhf_env.progress import bar

    if overwrite:  # on the driver, once: a retried task must resume, not start again
        for cfg in jobs:
            clear_for_overwrite(run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle))
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    task = ray.remote(run_job)
    refs: dict[Any, RunConfig] = {}
    for cfg in longest_first(jobs, str(runs)):
        res = {"num_cpus": 1, "num_gpus": 0, **cfg.resources}
        ref = task.options(max_retries=max_retries, **res).remote(
            cfg.to_dict(), str(runs), None if tensorboard_log is None else str(tensorboard_log),
            command, sealed, oracle_gpus)
        refs[ref] = cfg
    out: list[tuple[RunConfig, Any, str | None]] = []
    pbar = bar(total=len(jobs), desc=f"leaderboard ({workers} workers)", enabled=progress,
               leave=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}]")
    pending, start = list(refs), time.perf_counter()
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            cfg = refs[done[0]]
            what = f"[{len(out) + 1}/{len(jobs)}] {cfg.agent} seed {cfg.seed}"
            try:
                result = ray.get(done[0])
                out.append((cfg, result, None))
                key = "normalized_score" if "normalized_score" in result else "objective"
                log.info(f"{what} done in {result['wall_s']:.1f} s "
                         f"({time.perf_counter() - start:.0f} s since the start): "
                         f"{key} {result[key]:.4f}")
            except ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None) or e
                out.append((cfg, None, f"{type(cause).__name__}: {cause}"))
                log.warning(f"{what} failed: {type(cause).__name__}: {cause}")
            pbar.update(1)
    finally:
        pbar.close()
        if started:
            ray.shutdown()
    return out
