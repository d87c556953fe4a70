"""Ray's processes belong to the command that started them (issue 22, item 6): a driver of
``rlhf-zoo leaderboard --workers 2`` killed with SIGKILL leaves no process of its local Ray
instance behind, and ``--address`` to a port nobody listens on fails at once, naming the
address and the timeout. No Ray instance runs in this test process: the kill test drives a
real one in a child (``tests/_kill_worker.py ray_up``), identified by its own temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from agents.zoo.cli import main as zoo  # noqa: E402
from agents.zoo.distributed import CONNECT_TIMEOUT_S, check_address  # noqa: E402
from rlhf_env.errors import InvalidArgumentError  # noqa: E402

WORKER = Path(__file__).with_name("_kill_worker.py")
LIN = "LinearBT-v0"


def _session(tmp: str, known: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    """The processes of the Ray session under ``tmp`` that still run: those recorded in
    ``known`` (start times checked by psutil) and any whose command line names ``tmp``."""
    out = {}
    for pid, p in known.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out[pid] = p
        except psutil.Error:
            pass
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(tmp in a for a in p.info["cmdline"] or ()) and \
                    p.status() != psutil.STATUS_ZOMBIE:
                out.setdefault(p.pid, p)
        except psutil.Error:
            pass
    return out


def test_a_sigkilled_driver_leaves_no_ray_process_behind():
    # a short temp dir of the session's own (Ray's socket paths must stay under 108 bytes)
    tmp = tempfile.mkdtemp(prefix="rz", dir="/tmp")
    marker = os.path.join(tmp, "task-up")
    env = dict(os.environ, RAY_TMPDIR=tmp, RLHF_KILL_MARKER=marker, OMP_NUM_THREADS="1")
    log = open(os.path.join(tmp, "driver.log"), "wb")  # noqa: SIM115 - closed below
    child = subprocess.Popen(
        [sys.executable, str(WORKER), "ray_up", "120", "leaderboard", "--env", LIN,
         "--agents", "reference", "--seeds", "1", "--workers", "2",
         "--runs-dir", os.path.join(tmp, "runs"), "--out", os.path.join(tmp, "lb")],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    known: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 90
        while not os.path.exists(marker) or not Path(marker).read_text():
            assert child.poll() is None, Path(tmp, "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Ray's task never started"
            time.sleep(0.2)
        task_pid = int(Path(marker).read_text())
        time.sleep(1.0)  # the agents and idle workers Ray starts alongside the first task
        known = {p.pid: p for p in psutil.Process(child.pid).children(recursive=True)}
        known.update(_session(tmp, {}))
        names = {p.name() for p in known.values()}
        assert task_pid in known and {"raylet", "gcs_server"} <= names, names  # Ray is up

        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        while _session(tmp, known) and time.monotonic() - killed < 20:
            time.sleep(0.5)
        left = {pid: f"{p.name()} {' '.join(p.cmdline())[:80]}"
                for pid, p in _session(tmp, known).items()}
        assert left == {}, f"still running {time.monotonic() - killed:.0f} s after the kill"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for p in _session(tmp, known).values():  # only this session's processes
            try:
                p.kill()
            except psutil.Error:
                pass
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_address_nobody_listens_on_fails_fast_naming_it(tmp_path, capsys):
    start = time.monotonic()
    code = zoo(["leaderboard", "--env", LIN, "--agents", "reference", "--seeds", "1",
                "--address", "127.0.0.1:1", "--runs-dir", str(tmp_path / "runs"),
                "--out", str(tmp_path / "lb")])
    err = capsys.readouterr().err
    assert code == 1 and time.monotonic() - start < CONNECT_TIMEOUT_S + 5
    assert "127.0.0.1:1" in err and f"{CONNECT_TIMEOUT_S:g} s" in err, err
    assert not (tmp_path / "runs" / LIN).exists()  # nothing was created


@pytest.mark.parametrize("address", ["", "127.0.0.1", "host:0", "host:65536", "host:x",
                                     "ray://:6379", None, 6379])
def test_a_malformed_address_is_refused(address):
    with pytest.raises(InvalidArgumentError, match="address"):
        check_address(address)


def test_a_listening_address_passes_the_check():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        check_address(f"127.0.0.1:{port}", timeout=2)
        check_address(f"ray://127.0.0.1:{port}", timeout=2)
    check_address("auto")  # Ray's own: it fails fast when no cluster runs
