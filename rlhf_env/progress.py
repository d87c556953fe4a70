"""Feedback on long work: progress bars on a terminal, one log line per step elsewhere.

Builds the user waits on (a tiny pi0's SFT, a reward model) show a tqdm bar on a
terminal or notebook and log a line when they start and end (logger ``rlhf_env``;
``rlhf-zoo`` prints these lines when its output is not a terminal, and
``logging.basicConfig(level=logging.INFO)`` shows them in your scripts). Third-party
bars and notices that say nothing to the user (transformers' weight loading and
saving of the package's own tiny models) are silenced while it loads them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["log", "on_terminal", "bar", "quiet_transformers", "timed"]

log = logging.getLogger("rlhf_env")
log.addHandler(logging.NullHandler())


def on_terminal() -> bool:
    """Whether stderr is a terminal (bars) rather than a pipe or a file (lines)."""
    return sys.stderr.isatty()


def bar(total: int | None = None, desc: str = "", enabled: bool | None = None,
        **kwargs: Any) -> Any:
    """A tqdm bar: shown when ``enabled`` (None: on a terminal or in a notebook)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=None if enabled is None else not enabled,
                leave=kwargs.pop("leave", False), **kwargs)


@contextmanager
def timed(what: str) -> Iterator[None]:
    """Log ``what`` when it starts and how long it took when it ends (INFO)."""
    log.info("%s ...", what)
    start = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", what, time.perf_counter() - start)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and info/warning notices inside the block."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if was_enabled:
            hf_logging.enable_progress_bar()
