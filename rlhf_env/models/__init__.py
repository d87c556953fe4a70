"""Ready-made models above the policies: the tiny models the package builds itself
(:mod:`~rlhf_env.models.tiny`), SmolLM2-135M-Instruct from its wheel
(:mod:`~rlhf_env.models.smollm2`) and the HH-RLHF gold reward model
(:mod:`~rlhf_env.models.gold`). They import :mod:`rlhf_env.policies` and
:mod:`rlhf_env.lm`; neither imports them."""
