"""The agent zoo: agents that learn in rlhf_env environments (imports rlhf_env, never the reverse)."""
