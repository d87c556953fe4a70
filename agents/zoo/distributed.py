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

**A local instance dies with its driver, also on SIGKILL.** Ray's own reaper stops the
processes in the driver's process group (GCS, raylet, log monitor) when the driver dies,
but the raylet's children — the dashboard agent, the runtime-env agent — notice their
parent's death only after about a minute (they first try to report it to the dead GCS).
So :func:`run_jobs` starts the local instance (:func:`start_local_ray`, without the
dashboard) under a **watchdog** (:func:`start_watchdog`): a small Python process in a
session of its own, holding the read end of a pipe from the driver. While the driver
lives it records the driver's descendants (pid and start time) twice a second; when the
pipe reads end-of-file — the driver exited or was killed, the kernel closes its end
either way — and the driver's pid is gone, it sends SIGTERM to every recorded process
that still runs (and their children), and SIGKILL after two seconds. A driver that ends
normally shuts Ray down and tells the watchdog to leave (:meth:`Watchdog.stop`); a
process whose start time changed (a reused pid) is never touched. It needs ``psutil``,
which Ray installs; without it the instance runs unwatched, with a warning. An attached
cluster (``--address``) is not the command's, and is never stopped.

**Connecting is bounded.** ``--address host:port`` (or ``ray://host:port``) is first
reached with a plain TCP connection within :data:`CONNECT_TIMEOUT_S` seconds: an address
nobody listens on fails at once with an error naming it (Ray itself would wait for the
GCS for minutes). ``auto`` is Ray's: it fails fast when no cluster runs here.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any

from agents.zoo.config import RunConfig
from agents.zoo.run import clear_for_overwrite, finished_earlier, run_dir, train_run
from rlhf_env.errors import InvalidArgumentError

__all__ = ["require_ray", "RayClient", "run_job", "run_jobs", "oracle_service",
           "longest_first", "start_local_ray", "start_watchdog", "Watchdog", "check_address",
           "CONNECT_TIMEOUT_S"]

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


CONNECT_TIMEOUT_S = 10.0
"""How long ``--address host:port`` may take to accept a TCP connection."""


def check_address(address: Any, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`InvalidArgumentError` unless ``address`` (``auto``, ``host:port`` or
    ``ray://host:port``) is well formed and, for a host and port, accepts a TCP connection
    within ``timeout`` seconds (nothing else is checked: a listener that is not Ray is
    Ray's to refuse)."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidArgumentError(
            f"--address must be 'auto', host:port or ray://host:port, got {address!r}")
    if address in ("auto", "local"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(
            f"--address {address!r}: expected 'auto', host:port or ray://host:port (a port "
            "in 1..65535)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise InvalidArgumentError(
            f"--address {address}: no Ray cluster answers there (no TCP connection within "
            f"{timeout:g} s: {e}). Start one with 'ray start --head', or check the address "
            "(or use --workers N for a local instance)") from e


# The watchdog of an owned local instance (see the module docstring), run as
# ``python -c _WATCHDOG RAY_THIRDPARTY``. Its parent is the driver. It prints "ready" once it
# watches; "stop" on stdin ends it without touching anything; end-of-file with the driver
# gone stops every process it recorded as the driver's descendant (and their children).
_WATCHDOG = r"""
import os, select, sys, time
try:
    import psutil
except ImportError:
    sys.path.append(sys.argv[1])
    import psutil
driver = psutil.Process(os.getppid())
me = os.getpid()
seen = {}
def record():
    try:
        for p in driver.children(recursive=True):
            if p.pid != me:
                seen.setdefault((p.pid, p.create_time()), p)
    except psutil.Error:
        pass
def gone():
    try:
        return not driver.is_running() or driver.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
record()
print("ready", flush=True)
fd = sys.stdin.fileno()
while True:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if ready:
        data = os.read(fd, 64)
        if b"stop" in data:
            sys.exit(0)
        if not data:
            break
    record()
while not gone():
    time.sleep(0.2)
procs = {}
for p in seen.values():
    try:
        if p.is_running():
            procs[p.pid] = p
            for c in p.children(recursive=True):
                procs.setdefault(c.pid, c)
    except psutil.Error:
        pass
procs.pop(me, None)
for p in procs.values():
    try:
        p.terminate()
    except psutil.Error:
        pass
_, alive = psutil.wait_procs(list(procs.values()), timeout=2)
for p in alive:
    try:
        p.kill()
    except psutil.Error:
        pass
"""


class Watchdog:
    """The driver's end of a watchdog process (:func:`start_watchdog`)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Tell the watchdog the driver is done (Ray already shut down): it leaves."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_watchdog() -> Watchdog | None:
    """Start a watchdog of this process's descendants (see the module docstring); None,
    with a warning, when it cannot watch (no ``psutil``)."""
    ray = require_ray()
    thirdparty = os.path.join(os.path.dirname(ray.__file__), "thirdparty_files")
    proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, thirdparty],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        proc.wait()
        log.warning("the local Ray instance runs without a watchdog (psutil is missing): "
                    "if this process is killed, Ray's agents may outlive it for a minute")
        return None
    return Watchdog(proc)


def start_local_ray(workers: int) -> Watchdog | None:
    """``ray.init`` of a local instance with ``workers`` CPUs and no dashboard, under a
    watchdog that stops it if this process dies (returned: :meth:`Watchdog.stop` it after
    ``ray.shutdown()``)."""
    ray = require_ray()
    dog = start_watchdog()
    try:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    except BaseException:
        ray.shutdown()
        if dog is not None:
            dog.stop()
        raise
    return dog


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

    started = not ray.is_initialized()
    if started and address is not None:
        check_address(address)  # before anything is created: a dead address fails at once
    if overwrite:  # on the driver, once: a retried task must resume, not start again
        for cfg in jobs:
            clear_for_overwrite(run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle))
    dog: Watchdog | None = None
    if started:
        if address is not None:
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as e:
                raise InvalidArgumentError(f"--address {address}: {e}") from e
        else:
            dog = start_local_ray(workers)
    out: list[tuple[RunConfig, Any, str | None]] = []
    pbar = None
    try:
        task = ray.remote(run_job)
        refs: dict[Any, RunConfig] = {}
        earlier: dict[Any, Any] = {}  # ref -> the folder of a run finished before, or None
        for cfg in longest_first(jobs, str(runs)):
            before = finished_earlier(cfg, runs)  # before its task can write an eval.json
            res = {"num_cpus": 1, "num_gpus": 0, **cfg.resources}
            ref = task.options(max_retries=max_retries, **res).remote(
                cfg.to_dict(), str(runs),
                None if tensorboard_log is None else str(tensorboard_log), command, sealed,
                oracle_gpus)
            refs[ref], earlier[ref] = cfg, before
        pbar = bar(total=len(jobs), desc=f"leaderboard ({workers} workers)", enabled=progress,
                   leave=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}]")
        pending, start = list(refs), time.perf_counter()
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            cfg = refs[done[0]]
            what = f"[{len(out) + 1}/{len(jobs)}] {cfg.agent} seed {cfg.seed}"
            try:
                result = ray.get(done[0])
                out.append((cfg, result, None))
                key = "normalized_score" if "normalized_score" in result else "objective"
                done_as = (f"reused {earlier[done[0]]} (finished earlier)"
                           if earlier[done[0]] is not None else
                           f"done in {result['wall_s']:.1f} s "
                           f"({time.perf_counter() - start:.0f} s since the start)")
                log.info(f"{what} {done_as}: {key} {result[key]:.4f}")
            except ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None) or e
                out.append((cfg, None, f"{type(cause).__name__}: {cause}"))
                log.warning(f"{what} failed: {type(cause).__name__}: {cause}")
            pbar.update(1)
    finally:
        if pbar is not None:
            pbar.close()
        if started:
            ray.shutdown()
        if dog is not None:
            dog.stop()
    return out
