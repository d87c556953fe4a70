"""Reading and writing run and checkpoint files: atomic writes, digests, and clear errors.

Every file a run or a checkpoint reads back goes through :func:`read_json`,
:func:`read_yaml`, :func:`read_jsonl` or :func:`read_pairs`; a file that does
not parse raises :class:`~rlhf_env.errors.DataError` naming it and saying what
to do. Writes go to a temporary file that is renamed into place, so a kill
mid-write leaves the previous file or none, never a torn one. Checkpoint
folders carry a manifest of SHA-256 digests (:func:`write_manifest`), checked
on every read (:func:`verify_manifest`): an altered file is detected, never
silently resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from rlhf_env.errors import DataError

__all__ = ["write_text", "write_json", "read_json", "read_yaml", "read_jsonl", "sha256_file",
           "write_manifest", "verify_manifest", "MANIFEST", "write_pairs", "read_pairs",
           "report_folder"]

MANIFEST = "MANIFEST.json"


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


def _damaged(path: Path, e: Exception, hint: str) -> DataError:
    return DataError(f"{path} is damaged or not what it should be ({type(e).__name__}: {e}). "
                     f"{hint}")


def read_json(path: Path, hint: str = "Delete it or start the run again with --overwrite.") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(path, e, hint) from e


def read_yaml(path: Path, hint: str = "Delete it or start the run again with --overwrite.") -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise _damaged(path, e, hint) from e


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one per line. A torn or damaged line (a kill
    mid-write) is skipped with a warning naming the file and line."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{no}: skipping a damaged line", stacklevel=2)
            continue
        if isinstance(row, dict):
            yield row


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record the SHA-256 of every file under ``folder`` in ``folder/MANIFEST.json``."""
    folder = Path(folder)
    digests = {p.relative_to(folder).as_posix(): sha256_file(p)
               for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_json(folder / MANIFEST, digests)


def verify_manifest(folder: Path, hint: str) -> None:
    """Raise :class:`DataError` unless every file of ``folder``'s manifest has its digest."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{folder} has no {MANIFEST}: it was not completely written. {hint}")
    digests = read_json(manifest, hint)
    if not isinstance(digests, dict):
        raise DataError(f"{manifest} is not a manifest. {hint}")
    for name, digest in digests.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing (listed in {manifest}). {hint}")
        if sha256_file(path) != digest:
            raise DataError(f"{path} was altered after it was written (its SHA-256 differs "
                            f"from {manifest}). {hint}")


def write_pairs(path: Path, data: Any) -> None:
    """Write preference data as Parquet (atomically), with a ``.sha256`` beside it.

    The digest is written first and the table renamed into place last: a kill in between
    leaves a digest without its table, which reads as "never written" (the round collects
    again, answered from the ledger), never a table without its digest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {"prompt": data.prompts, "chosen": data.chosen,
                             "rejected": data.rejected}
    if data.confidence is not None:
        cols["confidence"] = data.confidence
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    pq.write_table(pa.table(cols), tmp)
    digest = sha256_file(tmp)
    write_text(path.with_name(path.name + ".sha256"), digest + "\n")
    tmp.replace(path)


def read_pairs(path: Path, hint: str) -> Any:
    """Preference data written by :func:`write_pairs`, its digest checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agents.data import PreferenceData

    digest_file = path.with_name(path.name + ".sha256")
    try:
        expected = digest_file.read_text().strip()
    except OSError as e:
        raise DataError(f"{digest_file} is missing: {path} cannot be checked. {hint}") from e
    if sha256_file(path) != expected:
        raise DataError(f"{path} was altered after it was written (its SHA-256 differs from "
                        f"{digest_file.name}). {hint}")
    try:
        table = pq.read_table(path).to_pydict()
    except (OSError, pa.ArrowException) as e:
        raise _damaged(path, e, hint) from e
    return PreferenceData(list(table["prompt"]), list(table["chosen"]), list(table["rejected"]),
                          list(table["confidence"]) if "confidence" in table else None)


@contextmanager
def report_folder(out: Path, last: Sequence[str]) -> Iterator[Path]:
    """A temporary folder to write a report into; on success each file is moved into
    ``out`` (os.replace: atomic), the files named in ``last`` last, all under a lock on
    ``out``. A failed or concurrent command never leaves a partial file, and the previous
    report stays until a complete one replaces it; other files in ``out`` are left alone."""
    import shutil

    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            out.mkdir(exist_ok=True)
            for f in sorted(tmp.iterdir(), key=lambda f: (f.name in last, f.name)):
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
