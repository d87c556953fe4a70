"""Two CPU processes (torchrun + accelerate, gloo) train the same policy as one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("_dist_worker.py")
ROOT = WORKER.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, out):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(args + [str(WORKER), str(out)], check=True, env=env, cwd=ROOT, timeout=300,
                   capture_output=True)


def test_two_processes_agree_with_each_other_and_with_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _run([sys.executable], one)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_addr", "127.0.0.1", "--master_port", str(_free_port())], two)
    single = torch.load(one / "rank0.pt")
    r0, r1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    assert r0["steps"] == r1["steps"] == single["steps"] == 4
    for k in single["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0)
        torch.testing.assert_close(r0["state"][k], single["state"][k], rtol=1e-4, atol=1e-5)
    assert abs(r0["loss"] - single["loss"]) < 1e-4
