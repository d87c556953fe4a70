"""The on-disk cache of models the package builds (tiny LMs, tiny reward models).

Entries live under ``$RLHF_ENV_CACHE`` (default ``~/.cache/rlhf_env``), one
folder per ``<kind>/<key>``, where the key hashes the build config and the
data. A folder is complete once it holds ``DONE``; builds write to a
temporary folder and rename it into place, so an interrupted build leaves no
half-written entry. A build holds a file lock (``<key>.lock``) while it runs: a second
process that wants the same entry waits for it and reuses the result instead of
building it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["cache_root", "cache_key", "hash_texts", "cached_build"]

ENV_VAR = "RLHF_ENV_CACHE"


def cache_root() -> Path:
    """The cache folder: ``$RLHF_ENV_CACHE`` or ``~/.cache/rlhf_env``."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "rlhf_env")


def hash_texts(texts: Iterable[str]) -> str:
    """A stable hash of a sequence of strings (order matters)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cache_key(config: dict[str, Any], data_hash: str = "") -> str:
    """The key of a build: a hash of its JSON config and its data hash."""
    blob = json.dumps(config, sort_keys=True, default=str) + "|" + data_hash
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_build(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return the folder of ``kind/key``, calling ``build(folder)`` first if it is missing
    (under a file lock: one process builds, the others wait and reuse its result)."""
    from filelock import FileLock, Timeout

    final = cache_root() / kind / key
    if (final / "DONE").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(final) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        from rlhf_env.progress import log

        log.info("another process is building %s/%s; waiting for it (lock %s)", kind, key,
                 lock.lock_file)
        lock.acquire()
    try:
        if (final / "DONE").is_file():  # built by the process we waited for
            return final
        return _build(final, key, build)
    finally:
        lock.release()


def _build(final: Path, key: str, build: Callable[[Path], None]) -> Path:
    tmp = final.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / "DONE").write_text("ok\n")
        if (final / "DONE").is_file():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
