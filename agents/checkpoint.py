"""Per-iteration checkpoints: labelled pairs as soon as they exist, the policy after training.

Layout of a checkpoint folder::

    state.json                 {"completed": k, ...}: iterations fully done (trained and saved)
    iter_000/pairs.parquet     the iteration's labelled pairs (written before training)
    iter_000/policy/           the policy after the iteration (safetensors + JSON)

``state.json`` is replaced atomically after an iteration's policy is saved, so
an interruption at any point leaves either the previous state or the new one;
pairs already written are reused on resume rather than paid for again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.data import PreferenceData
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.policies import Policy, load_policy

__all__ = ["Checkpointer"]


class Checkpointer:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _dir(self, t: int) -> Path:
        return self.folder / f"iter_{t:03d}"

    def state(self) -> dict[str, Any]:
        """The saved state (``{"completed": 0}`` when there is none)."""
        f = self.folder / "state.json"
        return json.loads(f.read_text()) if f.is_file() else {"completed": 0}

    def load_pairs(self, t: int) -> PreferenceData | None:
        f = self._dir(t) / "pairs.parquet"
        if not f.is_file():
            return None
        import datasets

        return PreferenceData.from_dataset(datasets.Dataset.from_parquet(str(f)))

    def save_pairs(self, t: int, data: PreferenceData) -> None:
        self._dir(t).mkdir(parents=True, exist_ok=True)
        tmp = self._dir(t) / "pairs.parquet.tmp"
        import datasets as ds_tqdm

        was_disabled = ds_tqdm.are_progress_bars_disabled()
        ds_tqdm.disable_progress_bars()  # one bar per file would drown the agent's own bar
        try:
            data.to_dataset().to_parquet(str(tmp))
        finally:
            if not was_disabled:
                ds_tqdm.enable_progress_bars()
        tmp.replace(self._dir(t) / "pairs.parquet")

    def load_policy(self, t: int) -> Policy:
        policy = load_policy(self._dir(t) / "policy")
        return policy

    def complete(self, t: int, policy: Policy, **state: Any) -> None:
        """Save iteration ``t``'s policy, then record it (and ``state``) as completed."""
        policy.save(self._dir(t) / "policy")
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps({"completed": t + 1, **state}))
        tmp.replace(self.folder / "state.json")

    @classmethod
    def for_resume(cls, folder: str | Path) -> Checkpointer:
        if not Path(folder).is_dir():
            raise InvalidArgumentError(f"resume_from={str(folder)!r} is not a checkpoint folder")
        return cls(folder)
