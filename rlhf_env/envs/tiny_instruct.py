"""TinyInstruct: a synthetic language testbed whose gold reward is a known program."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from rlhf_env.core import RLHFEnv
from rlhf_env.data.pairs import sample_reference_pairs
from rlhf_env.envs import tiny_tasks
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.instance import CommonArgs, ProblemInstance, check_positive_int, check_seed
from rlhf_env.judging import Judge
from rlhf_env.oracles import OracleContext
from rlhf_env.spaces import UnicodeText
from rlhf_env.threads import use_small_model_threads

__all__ = ["TinyInstructEnv", "SIZES"]

REGISTER = [
    {"id": "TinyInstruct-v0", "entry_point": "rlhf_env.envs.tiny_instruct:TinyInstructEnv",
     "description": "Synthetic instructions (sort/rev/max/count), a tiny LM pi0, a gold reward "
                    "program."},
]
"""The ids this module's envs are registered under (read by :mod:`rlhf_env.envs`)."""

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
    offline pairs; default 0), feedback, oracle (default ``"bt"``), ledger,
    model_seed (demonstrations and pi0;
    default 0), size (``"default"``: 4 layers x 128, 1000 SFT steps;
    ``"small"``: 2 x 64, 150 steps, for tests), n_train_prompts (1024),
    n_eval_prompts (128), n_offline (512; 0 online), max_new_tokens (16),
    device, dtype.

    ## Version History
    * v0: initial version.
    """

    kind = "sampled"

    def __init__(
        self,
        *,
        setting: str = "hybrid",
        query_budget: int | None = None,
        eta: float = 0.5,
        seed: int | None = 0,
        feedback: str = "preference",
        oracle: Any = "bt",
        ledger: Any = None,
        model_seed: int = 0,
        size: str = "default",
        n_train_prompts: int = 1024,
        n_eval_prompts: int = 128,
        n_offline: int | None = None,
        max_new_tokens: int = 16,
        device: str | None = "cpu",
        dtype: str | None = None,
    ) -> None:
        common = CommonArgs.check(setting=setting, query_budget=query_budget, eta=eta, seed=seed,
                                  feedback=feedback, oracle=oracle, ledger=ledger,
                                  default_budget=2048)
        use_small_model_threads()
        model_seed = check_seed(model_seed, "model_seed") or 0
        if size not in SIZES:
            raise InvalidArgumentError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        n_train = check_positive_int("n_train_prompts", n_train_prompts)
        n_eval = check_positive_int("n_eval_prompts", n_eval_prompts)
        max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        if n_offline is None:
            n_offline = 0 if common.setting == "online" else 512
        n_offline = check_positive_int("n_offline", n_offline, 0)
        if common.setting == "online" and n_offline:
            raise InvalidArgumentError(
                f"setting='online' has no offline data, but n_offline={n_offline}")
        from rlhf_env.lm.loading import resolve_device, resolve_dtype

        device, torch_dtype = resolve_device(device), resolve_dtype(dtype)

        # ---- pi0: demonstrations of mixed quality, SFT, cached on disk ------------------------
        from rlhf_env.models.tiny import TinyLMConfig, cached_tiny_lm, load_tiny_lm

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
        reference.model.to(device=device, dtype=torch_dtype)
        self.pi0_folder = folder
        self.model_config = asdict(cfg)

        # ---- prompts: train and held-out evaluation, disjoint -------------------------------
        rng = common.instance_rng(0x7127)
        train, evals = _unique_prompts(rng, n_train, n_eval)
        bound = common.bind_oracle(OracleContext(_gold_rewards, name="TinyInstruct"))
        reference.freeze()
        offline = None
        if common.setting != "online":
            offline = sample_reference_pairs(reference, bound, train, n_offline, rng)
        instance = ProblemInstance(
            kind="sampled", common=common, oracle=bound, train_prompts=train, eval_prompts=evals,
            reference=reference, offline_dataset=offline, response_space=UnicodeText(256),
            max_prompt_length=64, name="TinyInstruct")
        super().__init__(instance, Judge(instance, gold_reward=_gold_rewards, oracle=bound))


def _gold_rewards(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """r*(x, y) of TinyInstruct for a batch: private, as the judge and the oracle's binding
    hold it (an agent reads gold information only through paid labels)."""
    return np.array([_gold_reward(p, r) for p, r in zip(prompts, responses)])


def _gold_reward(prompt: str, response: str) -> float:
    """r*(x, y): see :mod:`rlhf_env.envs.tiny_tasks`. In [-inf, SCALE]; SCALE for a correct
    answer."""
    from collections import Counter

    words = response.split()
    n_ok = sum(w == tiny_tasks.FILLER for w in words)
    said = [w for w in words if w != tiny_tasks.FILLER]
    target = tiny_tasks.answer(prompt)
    if tiny_tasks.task_of(prompt) in ("sort", "rev"):
        n = max(len(said), len(target))
        positions = sum(a == b for a, b in zip(said, target)) / n
        items = sum((Counter(said) & Counter(target)).values()) / n
        credit = 0.7 * positions + 0.3 * items
    elif len(said) == 1 and said[0].isdigit():
        credit = max(0.0, 1.0 - abs(int(said[0]) - int(target[0])) / 4)
    else:
        credit = 0.0
    return tiny_tasks.SCALE * credit - tiny_tasks.FILLER_PENALTY * max(0, n_ok - 1)


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
