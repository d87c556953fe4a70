"""Bring your own trainer: TRL's GRPOTrainer on TinyInstruct-v0, the env's oracle as its reward.

    pip install -e ".[trl]"
    python examples/trl_grpo.py [--steps 60] [--out runs/trl_grpo]
    rlhf-zoo eval --model runs/trl_grpo/model --env TinyInstruct-v0 --seeds 5 --name trl_grpo \\
        --labels <the queries it printed>        # the same policy as a leaderboard row
                                                 # (--size small: add --env-kwargs size=small;
                                                 # the script prints its exact eval line)
    rlhf-zoo leaderboard --env TinyInstruct-v0 --seeds 5 --include-external

GRPO samples ``--num-generations`` completions per prompt from the policy (a trainable copy
of the env's pi0) and scores each through the env's oracle with reward feedback
(:func:`rlhf_env.integrations.trl.reward_function`): one charged query per completion, so
the env's ledger counts exactly what TRL asked for and the budget holds. Afterwards the
policy is evaluated by the harness exactly as a zoo agent's (J, KL to pi0 on held-out
prompts), beside pi0, and saved as a Hugging Face folder for ``rlhf-zoo eval --model``.

Note the objective: GRPO maximises the reward with its own KL term (``beta``, 0 by default
in TRL 1.16), not the env's E[r] - eta * KL; the harness reports J all the same.

Measured on the 2-core development CPU (2026-12-02, beside another 2-thread job, so
loaded), default arguments (size default, 60 steps of 8 completions): 4 m 13 s wall, 3 m
23 s user CPU; 480 queries charged = the 480 reward-function calls; pi0 J 2.477 ± 0.044,
GRPO J 2.559 ± 0.043 (gold 2.650, KL 0.181, win rate vs pi0 0.531); the same model as an
external row, 5 seeds: ``leaderboards/TinyInstruct-v0-external/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import rlhf_env


@dataclasses.dataclass
class Args:
    size: str = "default"
    """TinyInstruct-v0 size (default, or small for a quick run)"""
    steps: int = 60
    """GRPO optimiser steps"""
    batch_size: int = 8
    """completions per step (per_device_train_batch_size)"""
    num_generations: int = 4
    """completions per prompt (GRPO's group)"""
    learning_rate: float = 1e-4
    """AdamW step size"""
    seed: int = 0
    """seeds the env and TRL"""
    out: str = "runs/trl_grpo"
    """where the trained model goes (a Hugging Face folder under <out>/model)"""


def parse(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        kind = {"int": int, "float": float}.get(str(f.type), str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    return Args(**vars(parser.parse_args(argv)))


def eval_command(model_dir: Path, instance: dict[str, object], seed: int, labels: int) -> str:
    """The ``rlhf-zoo eval`` line that scores the saved model on the instance it was trained
    on: the same env kwargs (``instance``) and prompt split (``seed``)."""
    kwargs = " ".join(f"{k}={v}" for k, v in instance.items())
    return (f"rlhf-zoo eval --model {model_dir} --env TinyInstruct-v0 --env-kwargs {kwargs} "
            f"--seeds {seed}-{seed} --labels {labels}")


def main(args: Args) -> dict[str, float]:
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_env.integrations.trl import reward_function

    start = time.perf_counter()
    # what the instance (pi0, the prompts) is made of, which rlhf-zoo eval must make again,
    # and what only this training needs (the zoo sets setting and seed itself)
    instance = {"size": args.size}
    training = {"setting": "online", "feedback": "reward",
                "query_budget": args.steps * args.batch_size, "seed": args.seed}
    env = rlhf_env.make("TinyInstruct-v0", **instance, **training)
    u = env.unwrapped
    pi0 = u.reference
    policy = pi0.trainable_copy()
    tok = pi0.tokenizer
    tok.padding_side = "left"
    prompts = datasets.Dataset.from_dict({"prompt": list(u.instance.train_prompts)})
    reward = reward_function(env)
    with warnings.catch_warnings():
        # transformers 5 renamed gradient_checkpointing* to activation_checkpointing*, and
        # TRL 1.16 (GRPOConfig, GRPOTrainer) still calls the old names: four FutureWarnings
        # about TRL's code, not this script's. Every other warning still shows.
        warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing\w*` is "
                                "deprecated", category=FutureWarning)
        config = GRPOConfig(
            output_dir=args.out, per_device_train_batch_size=args.batch_size,
            num_generations=args.num_generations, max_completion_length=pi0.max_new_tokens,
            max_steps=args.steps, learning_rate=args.learning_rate, use_cpu=True, bf16=False,
            report_to=[], logging_steps=10, save_strategy="no", seed=args.seed)
        GRPOTrainer(model=policy.model, reward_funcs=[reward], args=config,
                    train_dataset=prompts, processing_class=tok).train()
    trained = time.perf_counter() - start
    policy.freeze()
    before = rlhf_env.evaluate(pi0, env, n_samples=8, best_of_n=())
    after = rlhf_env.evaluate(policy, env, n_samples=8, best_of_n=())
    model_dir = Path(args.out) / "model"
    policy.model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    print(f"TRL GRPO on TinyInstruct-v0 ({args.size}): {args.steps} steps, "
          f"{u.queries_used} queries charged (reward function: {reward.queries}), "
          f"{trained:.0f} s training, {time.perf_counter() - start:.0f} s in all")
    for name, m in (("pi0", before), ("GRPO", after)):
        print(f"  {name:5s} J {m['objective']:.3f} ± {m['objective_stderr']:.3f}  gold "
              f"{m['gold_reward']:.3f}  KL {m['kl']:.3f}  win vs pi0 {m['win_rate']:.3f}")
    made = ", ".join(f"{k}={v!r}" for k, v in {**instance, **training}.items())
    print(f"  env: rlhf_env.make('TinyInstruct-v0', {made})")
    print(f"  saved to {model_dir}: {eval_command(model_dir, instance, args.seed, u.queries_used)}")
    return {"queries": float(u.queries_used), "J_pi0": before["objective"],
            "J": after["objective"], "kl": after["kl"]}


if __name__ == "__main__":
    main(parse())
