"""Per-round checkpoints: labelled pairs as soon as they exist, the policy after training.

Layout of a checkpoint folder::

    state.json                 {"completed": k, ...}: rounds fully done (trained and saved)
    iter_000/pairs.parquet     the round's labelled pairs (written before training)
    iter_000/pairs.parquet.sha256
    iter_000/policy/           the policy after the round (safetensors + JSON + MANIFEST.json)
    selected/policy/           select_iterate='holdout': the best iterate so far (agents/select.py)

Every file is written atomically and carries a SHA-256 digest that is checked when it
is read back: an interruption at any point leaves either the previous state or the
new one, and an altered file raises :class:`~rlhf_env.errors.DataError` naming it
instead of being resumed. Pairs already written are reused on resume rather than paid
for again.

**What a resume needs, and no more.** A resume restarts at the first round not completed,
from the last completed round's policy: so only that round's ``policy/`` is kept (an
earlier one is deleted once the next is complete), while every round's pairs stay. A
LoRA policy saves its adapter alone (its base is pi0, which the env rebuilds), so a
round costs the adapter's size, not the model's. No optimiser state is kept: every
round of the package's agents starts a fresh optimiser (``train_preferences`` builds one
per call), so the state at a round boundary is the policy and the data. ``state.json``
records the bytes of the policy saved (``policy_bytes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.data import PreferenceData
from agents.files import (
    read_json,
    read_pairs,
    verify_manifest,
    write_json,
    write_manifest,
    write_pairs,
)
from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.policies import Policy, load_policy

__all__ = ["Checkpointer"]


class Checkpointer:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _dir(self, t: int) -> Path:
        return self.folder / f"iter_{t:03d}"

    def _hint(self, t: int) -> str:
        return (f"Delete {self._dir(t)} to redo round {t} (a zoo run answers its paid labels "
                "again from the run's ledger), or start again with --overwrite.")

    def state(self) -> dict[str, Any]:
        """The saved state (``{"completed": 0}`` when there is none)."""
        f = self.folder / "state.json"
        if not f.is_file():
            return {"completed": 0}
        state = read_json(f, f"Delete {f} to start the rounds again, or --overwrite.")
        if not isinstance(state, dict) or not isinstance(state.get("completed"), int):
            raise DataError(f"{f} is not a checkpoint state: {state!r:.120}")
        return state

    def load_pairs(self, t: int) -> PreferenceData | None:
        """Round ``t``'s pairs, or None if they were never written."""
        f = self._dir(t) / "pairs.parquet"
        if not f.is_file():
            return None
        return read_pairs(f, self._hint(t))

    def save_pairs(self, t: int, data: PreferenceData) -> None:
        self._dir(t).mkdir(parents=True, exist_ok=True)
        write_pairs(self._dir(t) / "pairs.parquet", data)

    def load_policy(self, t: int, base: Policy | None = None) -> Policy:
        """Round ``t``'s policy (a LoRA adapter goes on ``base``, pi0)."""
        folder = self._dir(t) / "policy"
        verify_manifest(folder, self._hint(t))
        return load_policy(folder, base=base)

    def complete(self, t: int, policy: Policy, **state: Any) -> None:
        """Save round ``t``'s policy, record it (and ``state``) as completed, then delete the
        policy of the round before (a resume needs the last one only)."""
        import shutil

        folder = self._dir(t) / "policy"
        policy.save(folder)
        write_manifest(folder)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "state.json", {"completed": t + 1, "policy_bytes": size,
                                                **state})
        for old in range(t):
            shutil.rmtree(self._dir(old) / "policy", ignore_errors=True)

    def save_selected(self, policy: Policy) -> None:
        """The incumbent of ``select_iterate="holdout"`` (agents/select.py), in
        ``selected/policy`` (replaced atomically: written aside, then renamed)."""
        import os
        import shutil

        tmp = self.folder / ".selected.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save(tmp / "policy")
        write_manifest(tmp / "policy")
        old = self.folder / ".selected.old"
        shutil.rmtree(old, ignore_errors=True)
        if (self.folder / "selected").exists():
            os.replace(self.folder / "selected", old)
        os.replace(tmp, self.folder / "selected")
        shutil.rmtree(old, ignore_errors=True)

    def load_selected(self, base: Policy | None = None) -> Policy:
        folder = self.folder / "selected" / "policy"
        if not folder.is_dir() and (self.folder / ".selected.old" / "policy").is_dir():
            folder = self.folder / ".selected.old" / "policy"  # killed between two renames
        verify_manifest(folder, f"Delete {self.folder} and start again with --overwrite.")
        return load_policy(folder, base=base)

    @classmethod
    def for_resume(cls, folder: str | Path) -> Checkpointer:
        if not Path(folder).is_dir():
            raise InvalidArgumentError(f"resume_from={str(folder)!r} is not a checkpoint folder")
        return cls(folder)
