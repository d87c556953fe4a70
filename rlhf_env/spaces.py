"""Text spaces for prompts and responses.

Gymnasium's :class:`~gymnasium.spaces.Text` accepts only strings over a fixed
character set. Prompts and responses of language tasks are arbitrary Unicode,
so :class:`UnicodeText` accepts any ``str`` up to ``max_length`` characters
(and samples from a printable alphabet). :class:`Candidates` is a text space
over a finite set of strings: the responses of a finite-action bandit.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from gymnasium.spaces import Text

__all__ = ["UnicodeText", "Candidates"]

_SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "


class UnicodeText(Text):
    """Any Unicode string with ``min_length <= len(s) <= max_length`` characters.

    ``sample()`` draws from printable ASCII; ``contains()`` accepts every character.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    def __hash__(self) -> int:
        return hash((UnicodeText, self.min_length, self.max_length))


class Candidates(Text):
    """A text space whose elements are a fixed, finite list of strings."""

    def __init__(self, choices: Sequence[str], *, seed: Any = None) -> None:
        if not choices:
            raise ValueError("Candidates needs at least one string")
        self.choices: tuple[str, ...] = tuple(choices)
        self._choice_set = frozenset(self.choices)
        chars = "".join(sorted(set("".join(self.choices)))) or " "
        lengths = [len(c) for c in self.choices]
        super().__init__(max(lengths), min_length=min(lengths), charset=chars, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        if mask is not None or probability is not None:
            raise NotImplementedError("Candidates.sample takes no mask or probability")
        return self.choices[int(self.np_random.integers(len(self.choices)))]

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and x in self._choice_set

    def __repr__(self) -> str:
        head = ", ".join(repr(c) for c in self.choices[:3])
        more = ", ..." if len(self.choices) > 3 else ""
        return f"Candidates([{head}{more}], n={len(self.choices)})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Candidates) and self.choices == other.choices

    def __hash__(self) -> int:  # spaces are used as dict keys by some wrappers
        return hash(self.choices)

