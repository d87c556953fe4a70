"""Oracle presets by name: what ``oracle="..."`` means when an env is made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlhf_env.errors import InvalidArgumentError, closest
from rlhf_env.oracles.base import Oracle
from rlhf_env.oracles.bradley_terry import BradleyTerry

__all__ = ["PRESETS", "make_oracle", "list_presets"]

PRESETS: dict[str, Callable[[], Oracle]] = {
    "bt": BradleyTerry,
}
"""Preset name -> a function that builds the (unbound) oracle."""


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return sorted(PRESETS)


def make_oracle(spec: Any = None) -> Oracle:
    """The oracle ``spec`` names: a preset name, an :class:`Oracle`, or None (``"bt"``)."""
    if spec is None:
        spec = "bt"
    if isinstance(spec, Oracle):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise InvalidArgumentError(
                f"unknown oracle preset {spec!r}.{closest(spec, PRESETS)} Presets: "
                f"{', '.join(list_presets())}; or pass an rlhf_env.oracles.Oracle object.")
        return PRESETS[spec]()
    raise InvalidArgumentError(
        f"oracle must be a preset name ({', '.join(list_presets())}) or an "
        f"rlhf_env.oracles.Oracle, got {type(spec).__name__} {spec!r:.80}")
