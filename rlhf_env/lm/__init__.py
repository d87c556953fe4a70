"""Language-model building blocks: tiny offline models, SFT, reward models, the disk cache.

Importing :mod:`rlhf_env` does not import this package; it loads transformers.
"""
