"""Thread defaults for the small models this package builds and runs on CPUs.

Torch's default — one intra-op thread per core — spins on tiny matrices: on a busy
2-core machine ``examples/quickstart.py`` took 1 m 58 s with it and 29.9 s with one
thread, for the same result. It does not pay on a 135M model either: two processes of one
thread each sampled SmolLM2 in 26.6-28.8 s where one process of two threads took 48-300 s
(2 cores, loaded; issue 28). So when an env builds or loads the models of a CPU preset
(TinyInstruct, HH-RLHF ``preset="tiny"`` or ``"smollm2"`` on a CPU), or an exact env is
made, the package sets torch to :func:`default_threads` intra-op threads (1 unless
``RLHF_ENV_NUM_THREADS`` says otherwise), and parallelism comes from processes (the zoo's
``--workers``, Ray, a vLLM engine's own process) — but never over a choice of yours:
nothing is changed when ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set, or once you
have called ``torch.set_num_threads`` after importing ``rlhf_env``.
"""

from __future__ import annotations

import os

import torch

__all__ = ["default_threads", "use_small_model_threads"]

ENV_VAR = "RLHF_ENV_NUM_THREADS"
_state: dict[str, int | None] = {"seen": torch.get_num_threads(), "set": None}


def default_threads() -> int:
    """``$RLHF_ENV_NUM_THREADS`` if set (an int >= 1), else 1."""
    value = os.environ.get(ENV_VAR, "1")
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        from rlhf_env.errors import InvalidArgumentError

        raise InvalidArgumentError(f"{ENV_VAR} must be an int >= 1, got {value!r}")
    return n


def use_small_model_threads() -> None:
    """Set torch's intra-op threads to :func:`default_threads` unless the user chose theirs."""
    if ENV_VAR not in os.environ and ("OMP_NUM_THREADS" in os.environ
                                      or "MKL_NUM_THREADS" in os.environ):
        return
    current = torch.get_num_threads()
    if current != (_state["set"] if _state["set"] is not None else _state["seen"]):
        return  # torch.set_num_threads was called by the user: theirs wins
    n = default_threads()
    if current != n:
        torch.set_num_threads(n)
    _state["set"] = n
