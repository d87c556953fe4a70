"""The zoo's hyperparameters: one YAML file per agent (``<agent>.yml``), shipped as package data.

Read by :mod:`agents.hyperparams` (``agents.make`` and ``rlhf-zoo`` alike).
"""
