"""Reaching the Hugging Face hub: a quick reachability check, and the pinned default revisions.

Loading from the hub retries for half a minute when there is no network; the envs ask
:func:`hub_reachable` first (a TCP connect with a short timeout, or the offline switches
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) and fail in a moment with an error that says
what to pass instead.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

__all__ = ["hub_reachable", "DEFAULT_REVISIONS"]

DEFAULT_REVISIONS = {
    # the hubs' main branches hold only pickle weights (pytorch_model.bin); these refs are the
    # safetensors conversions (commits e981359 and efd3cb1), which load without unpickling
    "openlm-research/open_llama_3b_v2": "refs/pr/12",
    "weqweasdas/hh_rlhf_rm_open_llama_3b": "refs/pr/2",
}
"""Hub id -> the revision loaded when that id is used without an explicit revision."""


@lru_cache(maxsize=4)
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the hub answers a TCP connection within ``timeout`` seconds (and no offline
    switch is set). Cached for the process."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
            "HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True
