"""Anthropic's HH-RLHF preference data, parsed into prompt/chosen/rejected rows.

Each published row holds two whole dialogues, ``chosen`` and ``rejected``, of
``\\n\\nHuman: ...`` and ``\\n\\nAssistant: ...`` turns that share the history up
to the last ``\\n\\nAssistant:``. A parsed row is

* ``prompt``: the dialogue up to and including the last ``\\n\\nAssistant:``;
* ``chosen`` / ``rejected``: the text after it in each dialogue (leading space kept).

Rows whose two histories differ, or whose chosen or rejected response is
empty (whitespace only), are dropped and counted; so are malformed lines
(bad JSON, missing keys, non-UTF-8 bytes). With ``strict=True`` the first such
row raises :class:`~rlhf_env.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlhf_env.errors import DataError

__all__ = ["HUB_ID", "SUBSETS", "ASSISTANT", "split_dialogue", "parse_pair", "load_hh_rlhf",
           "local_files"]

HUB_ID = "Anthropic/hh-rlhf"
SUBSETS = ("helpful-base", "helpful-online", "helpful-rejection-sampled", "harmless-base")
ASSISTANT = "\n\nAssistant:"
REASONS = ("malformed", "no_assistant_turn", "history_mismatch", "empty_chosen", "empty_rejected")


def split_dialogue(text: str) -> tuple[str, str] | None:
    """``(prompt, response)`` split after the last ``\\n\\nAssistant:``, or None if there is none."""
    i = text.rfind(ASSISTANT)
    if i < 0:
        return None
    cut = i + len(ASSISTANT)
    return text[:cut], text[cut:]


def parse_pair(chosen: str, rejected: str) -> tuple[str, str, str] | str:
    """``(prompt, chosen_response, rejected_response)``, or the reason the row is dropped."""
    c, r = split_dialogue(chosen), split_dialogue(rejected)
    if c is None or r is None:
        return "no_assistant_turn"
    if c[0] != r[0]:
        return "history_mismatch"
    if not c[1].strip():
        return "empty_chosen"
    if not r[1].strip():
        return "empty_rejected"
    return c[0], c[1], r[1]


def _read_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line_number, parsed object or DataError)`` for each non-blank line of a JSONL(.gz) file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    yield no, json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    yield no, DataError(f"{path}:{no}: not UTF-8 ({e.reason} at byte {e.start})")
                except json.JSONDecodeError as e:
                    yield no, DataError(f"{path}:{no}: malformed JSON ({e.msg}, column {e.colno})")
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from e


def _rows_from_files(files: Iterable[Path]) -> Iterator[tuple[str, int, Any]]:
    for path in files:
        for no, obj in _read_lines(path):
            yield str(path), no, obj


def _rows_from_hub(subsets: list[str], split: str) -> Iterator[tuple[str, int, Any]]:
    import datasets

    for subset in subsets:
        try:
            ds = datasets.load_dataset(HUB_ID, data_dir=subset, split=split)
        except Exception as e:  # network, missing split, ...: say what to pass instead
            raise DataError(
                f"cannot load {HUB_ID} ({subset}, split {split!r}) from the hub: {e}. "
                "Without network, pass data_dir= (a local mirror: <data_dir>/<subset>/"
                "<split>.jsonl.gz) or data_files= (paths per split)."
            ) from e
        for i, row in enumerate(ds, start=1):
            yield f"{HUB_ID}/{subset}/{split}", i, row


def local_files(data_dir: str | Path, subsets: list[str], split: str) -> list[Path]:
    """The files of ``split`` in a local mirror (``<dir>/<subset>/<split>.jsonl[.gz]``)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir {str(root)!r} does not exist or is not a folder")
    found: list[Path] = []
    for subset in subsets:
        for base in (root / subset, root):
            hits = [base / f"{split}.jsonl.gz", base / f"{split}.jsonl"]
            hit = next((h for h in hits if h.is_file()), None)
            if hit is not None:
                if hit not in found:  # a data_dir that is itself one subset's folder serves
                    found.append(hit)  # every subset asked for: read its file once
                break
    return found


def load_hh_rlhf(
    *,
    subset: str | list[str] = "helpful-base",
    split: str = "train",
    data_dir: str | Path | None = None,
    data_files: str | Path | list | None = None,
    strict: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Load and parse HH-RLHF; returns ``(datasets.Dataset, report)``.

    Args:
        subset: one of :data:`SUBSETS`, ``"all"``, or a list of them.
        split: ``"train"`` or ``"test"``.
        data_dir: a local mirror of the dataset's folders (no network needed).
        data_files: explicit JSONL(.gz) file(s) for this split (overrides ``data_dir``).
        strict: raise on the first dropped or malformed row instead of counting it.

    The report counts ``rows`` read, ``kept``, and each drop reason in
    ``dropped`` (malformed, no_assistant_turn, history_mismatch, empty_chosen,
    empty_rejected), with the ``files`` read.
    """
    import datasets

    subsets = list(SUBSETS) if subset == "all" else [subset] if isinstance(subset, str) else subset
    bad = [s for s in subsets if s not in SUBSETS]
    if bad:
        raise DataError(f"unknown HH-RLHF subset(s) {bad}; valid: {SUBSETS} or 'all'")
    if data_files is not None:
        files = [Path(f) for f in ([data_files] if isinstance(data_files, (str, Path))
                                   else data_files)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"data_files not found: {missing}")
        rows: Iterable = _rows_from_files(files)
        sources = [str(f) for f in files]
    elif data_dir is not None:
        files = local_files(data_dir, subsets, split)
        if not files:
            raise DataError(
                f"no {split}.jsonl(.gz) for subsets {subsets} under {str(data_dir)!r}"
            )
        rows, sources = _rows_from_files(files), [str(f) for f in files]
    else:
        rows, sources = _rows_from_hub(subsets, split), [f"{HUB_ID}:{s}/{split}" for s in subsets]

    out: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    dropped: Counter[str] = Counter({r: 0 for r in REASONS})
    n = 0
    for source, no, obj in rows:
        n += 1
        if isinstance(obj, DataError):
            reason, detail = "malformed", str(obj)
        elif not isinstance(obj, dict) or not isinstance(obj.get("chosen"), str) or not isinstance(
            obj.get("rejected"), str
        ):
            keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            reason = "malformed"
            detail = f"{source}:{no}: needs string fields 'chosen' and 'rejected', got {keys}"
        else:
            parsed = parse_pair(obj["chosen"], obj["rejected"])
            if isinstance(parsed, tuple):
                out["prompt"].append(parsed[0])
                out["chosen"].append(parsed[1])
                out["rejected"].append(parsed[2])
                continue
            reason, detail = parsed, f"{source}:{no}: dropped ({parsed.replace('_', ' ')})"
        if strict:
            raise DataError(detail + " [strict=True]")
        dropped[reason] += 1
    report = {"rows": n, "kept": len(out["prompt"]), "dropped": dict(dropped), "files": sources,
              "split": split}
    return datasets.Dataset.from_dict(out), report
