"""Policies: the interface and its implementations."""

from rlhf_env.policies.base import Policy, load_policy, register_policy_class
from rlhf_env.policies.finite import Catalog, FinitePolicy, LogLinearPolicy, TabularPolicy


def __getattr__(name: str):  # CausalLMPolicy loads transformers: import it only when asked
    if name == "CausalLMPolicy":
        from rlhf_env.policies.causal_lm import CausalLMPolicy

        return CausalLMPolicy
    raise AttributeError(name)


__all__ = [
    "CausalLMPolicy",
    "Policy",
    "load_policy",
    "register_policy_class",
    "Catalog",
    "FinitePolicy",
    "TabularPolicy",
    "LogLinearPolicy",
]
