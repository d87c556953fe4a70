"""Preference data: what an agent learns from (offline pairs and the labels it paid for)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PreferenceData"]


@dataclass
class PreferenceData:
    """Preference triples; ``chosen[i]`` was preferred to ``rejected[i]`` for ``prompts[i]``.

    ``confidence[i]`` is P(chosen > rejected) for soft labels (None: hard labels).
    """

    prompts: list[str] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    confidence: list[float] | None = None

    @classmethod
    def from_dataset(cls, ds: Any) -> PreferenceData:
        """From a ``datasets.Dataset`` (or None) with prompt/chosen/rejected[/confidence]."""
        if ds is None:
            return cls()
        conf = list(ds["confidence"]) if "confidence" in ds.column_names else None
        return cls(list(ds["prompt"]), list(ds["chosen"]), list(ds["rejected"]), conf)

    def extend(self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
               confidence: Sequence[float] | None = None) -> None:
        if (confidence is None) != (self.confidence is None) and len(self):
            raise ValueError("cannot mix soft-labelled (confidence) and hard-labelled pairs")
        if confidence is not None:
            self.confidence = (self.confidence or []) + [float(c) for c in confidence]
        self.prompts += list(prompts)
        self.chosen += list(chosen)
        self.rejected += list(rejected)

    def add(self, other: PreferenceData) -> None:
        """Append every pair of ``other``."""
        self.extend(other.prompts, other.chosen, other.rejected, other.confidence)

    def __add__(self, other: PreferenceData) -> PreferenceData:
        out = PreferenceData(list(self.prompts), list(self.chosen), list(self.rejected),
                             None if self.confidence is None else list(self.confidence))
        out.add(other)
        return out

    def __len__(self) -> int:
        return len(self.prompts)

    def identical(self) -> int:
        """Pairs whose two responses are the same string (no preference in them)."""
        return sum(c == r for c, r in zip(self.chosen, self.rejected))

    def without_ties(self) -> tuple[PreferenceData, int]:
        """The pairs with two different responses, and how many were dropped."""
        keep = [i for i in range(len(self)) if self.chosen[i] != self.rejected[i]]
        out = PreferenceData([self.prompts[i] for i in keep], [self.chosen[i] for i in keep],
                             [self.rejected[i] for i in keep],
                             None if self.confidence is None else [self.confidence[i] for i in keep])
        return out, len(self) - len(keep)

    def to_dataset(self) -> Any:
        import datasets

        cols: dict[str, list] = {"prompt": self.prompts, "chosen": self.chosen,
                                 "rejected": self.rejected}
        if self.confidence is not None:
            cols["confidence"] = self.confidence
        return datasets.Dataset.from_dict(cols)
