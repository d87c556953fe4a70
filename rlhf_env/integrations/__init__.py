"""Adapters for other people's trainers: each optional, imported lazily, never by the core.

* :mod:`rlhf_env.integrations.trl`: the env's oracle as TRL ``reward_funcs`` (GRPO, RLOO,
  OnlineDPO) and its data as TRL preference datasets;
* :mod:`rlhf_env.integrations.oat`: the env's oracle behind oat's ``compare`` contract.

Every adapter goes through the env's public, charged API (the instance's ``label`` and
``score``): a foreign trainer pays for every label exactly as a zoo agent does, and none
reaches the judge.
"""
