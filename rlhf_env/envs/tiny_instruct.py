"""TinyInstruct: a synthetic language testbed whose gold reward is a known program."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from rlhf_env.core import RLHFEnv, check_seed, resolve_setting
from rlhf_env.envs import tiny_tasks
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.oracles import BradleyTerryOracle
from rlhf_env.spaces import UnicodeText

__all__ = ["TinyInstructEnv", "SIZES"]

# model size presets: (model config, demonstrations, SFT steps, batch size, learning rate)
SIZES: dict[str, dict[str, Any]] = {
    "default": {"n_layer": 4, "n_embd": 128, "n_demos": 4000, "steps": 1000, "lr": 2e-3},
    "small": {"n_layer": 2, "n_embd": 64, "n_demos": 1000, "steps": 150, "lr": 3e-3},
}


class TinyInstructEnv(RLHFEnv):
    r"""A synthetic instruction-following bandit over a tiny causal LM.

    ## Description
    Prompts are short instructions in a small synthetic language
    (``sort d b a =``, ``rev ...``, ``max 3 7 2 =``, ``count b : a b b =``; see
    :mod:`rlhf_env.envs.tiny_tasks`). The gold reward r* is a documented program
    with partial credit (0 to 4 for the answer) and a filler penalty that makes
    reward hacking observable: every ``ok`` after the first costs 1.
    The reference pi0 is a tiny GPT-2-style model (byte-level tokenizer, no
    download) fine-tuned by the package on a demonstration corpus of mixed
    quality (35% correct), so it is mediocre: sampling it many times and keeping
    the best does much better than one sample.

    ## Objective (Reward)
    J(pi) = E_x[ E_{y~pi} r*(x, y) - eta * KL(pi(.|x) || pi0(.|x)) ], with
    sequence-level KL. :func:`rlhf_env.evaluate` estimates it by Monte Carlo on
    the held-out prompts, with standard errors.

    ## Spaces
    Observation ``Dict({"prompt": UnicodeText})``. Action: a pair of response
    strings (``feedback="preference"``, Bradley-Terry over r*, reward 1.0 when
    the first is preferred) or one response (``feedback="reward"``, reward r*).
    Every episode is one step.

    ## Settings and data
    ``setting="offline" | "online" | "hybrid"`` (default hybrid). Offline data:
    for ``n_offline`` train prompts, four samples from pi0, the first two that
    differ form a pair (prompts whose samples are all identical are skipped),
    labelled by the BT oracle over r*. ``n_eval_prompts`` held-out prompts,
    disjoint from the train prompts, are for evaluation.

    ## Measured (CPU, 2 cores; ``benchmarks/tiny_instruct_pi0.py --fresh``)
    Default size, 128 held-out prompts x 16 samples: pi0's gold reward is
    1.94 ± 0.05; best-of-4 of pi0 scores 3.27 and best-of-16 3.91 (of 4).
    Building pi0 takes about 112 s on first use; it is cached afterwards.

    ## Arguments
    setting, query_budget (default 2048), eta (0.5), seed (prompt split,
    offline pairs; default 0), feedback, model_seed (demonstrations and pi0;
    default 0), size (``"default"``: 4 layers x 128, 1000 SFT steps;
    ``"small"``: 2 x 64, 150 steps, for tests), n_train_prompts (1024),
    n_eval_prompts (128), n_offline (512; 0 online), max_new_tokens (16),
    device, dtype, bt_temperature (1.0).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        *,
        setting: str = "hybrid",
        query_budget: int | None = None,
        eta: float = 0.5,
        seed: int | None = 0,
        feedback: str = "preference",
        model_seed: int = 0,
        size: str = "default",
        n_train_prompts: int = 1024,
        n_eval_prompts: int = 128,
        n_offline: int | None = None,
        max_new_tokens: int = 16,
        device: str | None = "cpu",
        dtype: str | None = None,
        bt_temperature: float = 1.0,
    ) -> None:
        from rlhf_env.lm.tiny import TinyLMConfig, cached_tiny_lm, load_tiny_lm

        seed = check_seed(seed)
        model_seed = check_seed(model_seed, "model_seed") or 0
        setting, budget = resolve_setting(setting, query_budget, default_budget=2048)
        if size not in SIZES:
            raise InvalidArgumentError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        for name, v in (("n_train_prompts", n_train_prompts), ("n_eval_prompts", n_eval_prompts),
                        ("max_new_tokens", max_new_tokens)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
        if n_offline is None:
            n_offline = 0 if setting == "online" else 512
        if setting == "online" and n_offline:
            raise InvalidArgumentError(
                f"setting='online' has no offline data, but n_offline={n_offline}"
            )

        # ---- pi0: demonstrations of mixed quality, SFT, cached on disk ------------------------
        preset = SIZES[size]
        cfg = TinyLMConfig(n_layer=preset["n_layer"], n_embd=preset["n_embd"], n_head=4,
                           n_positions=64, seed=model_seed)
        demo_rng = np.random.default_rng(np.random.SeedSequence([model_seed, 0xDE30]))
        demo_prompts = [tiny_tasks.make_prompt(demo_rng) for _ in range(preset["n_demos"])]
        demos = [tiny_tasks.demonstration(p, demo_rng) for p in demo_prompts]
        folder = cached_tiny_lm("tiny_instruct_pi0", cfg, demo_prompts, demos,
                                steps=preset["steps"], batch_size=64, lr=preset["lr"],
                                seed=model_seed)
        reference = load_tiny_lm(folder)
        reference.max_new_tokens = max_new_tokens
        if device is not None or dtype is not None:
            from rlhf_env.policies.causal_lm import _resolve_device, _resolve_dtype

            reference.model.to(device=_resolve_device(device), dtype=_resolve_dtype(dtype))
        self.pi0_folder = folder

        # ---- prompts: train and held-out evaluation, disjoint -------------------------------
        rng = np.random.default_rng(np.random.SeedSequence([0 if seed is None else seed, 0x7127]))
        train, evals = _unique_prompts(rng, n_train_prompts, n_eval_prompts)
        oracle = BradleyTerryOracle(self._reward_fn, temperature=bt_temperature)
        reference.freeze()
        offline = None
        if setting != "online":
            offline = _offline_pairs(reference, oracle, train, n_offline, rng)
        self._setup(
            train_prompts=train, eval_prompts=evals, reference=reference, oracle=oracle,
            eta=eta, setting=setting, query_budget=budget, offline_dataset=offline,
            feedback=feedback, seed=seed, response_space=UnicodeText(256),
            max_prompt_length=64,
        )
        self.model_config = asdict(cfg)

    @staticmethod
    def _reward_fn(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.array([tiny_tasks.gold_reward(p, r) for p, r in zip(prompts, responses)])


def _unique_prompts(rng: np.random.Generator, n_train: int, n_eval: int) -> tuple[list, list]:
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < n_train + n_eval:
        seen.setdefault(tiny_tasks.make_prompt(rng))
        tries += 1
        if tries > 100 * (n_train + n_eval):
            raise InvalidArgumentError(
                f"cannot draw {n_train + n_eval} distinct prompts; ask for fewer"
            )
    prompts = list(seen)
    return prompts[:n_train], prompts[n_train:]


def _offline_pairs(
    reference: Any, oracle: BradleyTerryOracle, train: list[str], n_pairs: int,
    rng: np.random.Generator,
) -> Any:
    import datasets

    idx = np.floor(rng.random(n_pairs) * len(train)).astype(np.int64)
    prompts = [train[i] for i in idx]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    samples = reference.sample(prompts, n=4, generator=gen)
    kept_p, r1, r2 = [], [], []
    for p, cands in zip(prompts, samples):
        first = cands[0]
        other = next((c for c in cands[1:] if c != first), None)
        if other is not None:
            kept_p.append(p)
            r1.append(first)
            r2.append(other)
    y, _, _ = oracle.preferences(kept_p, r1, r2, rng)
    chosen = [a if yi else b for a, b, yi in zip(r1, r2, y)]
    rejected = [b if yi else a for a, b, yi in zip(r1, r2, y)]
    return datasets.Dataset.from_dict({"prompt": kept_p, "chosen": chosen, "rejected": rejected})
