"""Register your own prompts, reference model and reward as a new env id, then train on it.

The reference here is a tiny byte-level LM fine-tuned by the package on a toy
greeting task (seconds on a CPU); the gold reward is a Python function. With a
network and a GPU, pass a hub id or a local path instead of each:
``reference="your/sft-model"``, ``reward="your/reward-model"``.

    python examples/custom_env.py [--sft-steps 200] [--agent iterative_dpo]

Measured on the 2-core development CPU (2026-12-02, load 2.0: a leaderboard and a test
ran beside it, so read the CPU time), whole command: the first time (empty
``RLHF_ENV_CACHE``: the reference is fine-tuned and cached) 37.6 s wall, 18.8 s CPU; after
that 14.5 s wall, 9.3 s CPU; gold reward 0.750 -> 1.188 (the 1.719 of 2026-11-26 predates
the dropout and thread changes; commit 9623f64 gives 1.188 too).
"""

from __future__ import annotations

import argparse

import numpy as np

import agents
import rlhf_env
from rlhf_env.models.tiny import TinyLMConfig, cached_tiny_lm, load_tiny_lm

NAMES = ["ann", "bob", "cy", "dee", "eve", "fin", "gus", "hal", "ida", "joe", "kim", "lou"]


def gold_reward(prompts, responses) -> np.ndarray:
    """+2 for greeting the right person, +1 for "please"-free brevity; -1 per extra word."""
    out = []
    for p, r in zip(prompts, responses):
        name, words = p.split()[1].rstrip(":"), r.split()
        score = 2.0 * (name in words) + 1.0 * (words[:1] == ["hi"]) - max(0, len(words) - 2)
        out.append(score)
    return np.array(out, dtype=np.float64)


def reference_policy(sft_steps: int):
    """pi0: an LM fine-tuned on demonstrations, half of them sloppy."""
    rng = np.random.default_rng(0)
    prompts = [f"greet {rng.choice(NAMES)}:" for _ in range(600)]
    demos = [f" hi {p.split()[1][:-1]}" if rng.random() < 0.5 else
             f" hello {rng.choice(NAMES)} there friend" for p in prompts]
    cfg = TinyLMConfig(n_layer=2, n_embd=64, n_head=4, n_positions=48, seed=0)
    folder = cached_tiny_lm("custom_env_example", cfg, prompts, demos, steps=sft_steps,
                            batch_size=64, lr=3e-3, seed=0)
    policy = load_tiny_lm(folder)
    policy.max_new_tokens = 12
    return policy


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--agent", default="iterative_dpo")
    parser.add_argument("--query-budget", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    # the env id is yours: registered once, made as often as you like
    rlhf_env.register(
        "Greeting-v0", "rlhf_env.envs.custom:PromptsEnv",
        kwargs={"train_prompts": [f"greet {n}:" for n in NAMES[:8]],
                "eval_prompts": [f"greet {n}:" for n in NAMES[8:]],
                "reference": reference_policy(args.sft_steps), "reward": gold_reward,
                "eta": 0.5, "n_offline": 64},
        description="Greet the right person, briefly (examples/custom_env.py).",
    )
    env = rlhf_env.make("Greeting-v0", query_budget=args.query_budget, seed=0)
    agent = agents.make(args.agent, env, seed=0, rpo_alpha=1.0, learning_rate=1e-3,
                        num_train_epochs=args.epochs)
    agent.learn()
    before = rlhf_env.evaluate(env.unwrapped.reference, env, n_samples=8, best_of_n=())
    after = rlhf_env.evaluate(agent.policy, env, n_samples=8, best_of_n=())
    print(f"gold reward: pi0 {before['gold_reward']:.3f} -> {args.agent} {after['gold_reward']:.3f}"
          f" (KL {after['kl']:.3f}, {env.unwrapped.queries_used} queries)")
    return after


if __name__ == "__main__":
    main()
