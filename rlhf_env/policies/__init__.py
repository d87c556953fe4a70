"""Policies: the interface, exact tables, language models, best-of-n, and the closed forms."""

from rlhf_env.policies.base import Policy, is_registered, load_policy, register_policy_class
from rlhf_env.policies.best_of_n import FiniteBestOfN, SampledBestOfN, best_of_n_policy
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
    "is_registered",
    "Catalog",
    "FinitePolicy",
    "TabularPolicy",
    "LogLinearPolicy",
    "FiniteBestOfN",
    "SampledBestOfN",
    "best_of_n_policy",
]
