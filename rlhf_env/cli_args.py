"""Command-line arguments shared by ``rlhf-env`` and ``rlhf-zoo`` (the zoo imports this module;
``rlhf_env`` never imports the zoo).

    parse_key_values(["size=small", "eta=0.1"], "--env-kwargs")  # {"size": "small", "eta": 0.1}
"""

from __future__ import annotations

from typing import Any

import yaml

from rlhf_env.errors import InvalidArgumentError

__all__ = ["parse_key_values"]


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict, each value read as YAML (``3``, ``0.1``, ``tiny``, ``true``,
    ``[1, 2]``); ``flag`` names the option in the messages.

    An item without ``=`` or with an empty key, a key given twice (which value was meant is a
    guess either way) and a value that is not YAML raise :class:`InvalidArgumentError`.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgumentError(f"{flag} expects key=value, got {item!r}")
        if key in out:
            raise InvalidArgumentError(f"{flag}: {key!r} is given twice; give each key once")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise InvalidArgumentError(f"{flag} {item!r}: the value does not parse: {e}") from e
    return out
