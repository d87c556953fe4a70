"""The real Anthropic HH-RLHF data: the tiny preset on a CPU, the research settings on a GPU.

    # CPU, offline, from a local copy (tiny models: exercises the pipeline, not a result)
    python examples/hh_rlhf.py --data-dir ../shared/data/hh-rlhf --subset harmless-base
    # GPU with a network: a real SFT model and a real reward model from the hub
    python examples/hh_rlhf.py --research --device cuda --reference-model your/sft-model

Measured on the 2-core development CPU (2026-11-26), the first command: 48.9 s the first
time (the tiny pi0 and gold reward model are trained and cached), 11.0 s after.
"""

from __future__ import annotations

import argparse

import agents
import rlhf_env


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="a local copy (mirror layout); "
                        "default: the hub (Anthropic/hh-rlhf)")
    parser.add_argument("--subset", default="harmless-base")
    parser.add_argument("--research", action="store_true",
                        help="hub models (open_llama_3b_v2 + its HH reward model), bf16")
    parser.add_argument("--reference-model", default=None, help="your SFT checkpoint (research)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--agent", default="dpo")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--n-offline", type=int, default=256)
    parser.add_argument("--n-eval-prompts", type=int, default=32)
    args = parser.parse_args(argv)

    kwargs = {"subset": args.subset, "data_dir": args.data_dir, "n_offline": args.n_offline,
              "n_eval_prompts": args.n_eval_prompts, "setting": "offline", "query_budget": 0}
    if args.research:
        kwargs.update(device=args.device or "cuda", dtype="bfloat16")
        if args.reference_model:
            kwargs["reference_model"] = args.reference_model
    else:
        kwargs["preset"] = "tiny"
    env = rlhf_env.make("HH-RLHF-v0", **kwargs)
    u = env.unwrapped
    print(f"HH-RLHF ({args.subset}): {len(u.offline_dataset)} pairs, "
          f"dropped while parsing: {u.data_report['dropped']}")
    agent = agents.make(args.agent, env, num_train_epochs=args.epochs, rpo_alpha=1.0)
    agent.learn()
    # the same prompts and samples for both, so the difference is the agent's
    ref = rlhf_env.evaluate(u.reference, env, n_samples=2, best_of_n=(), seed=0)
    m = rlhf_env.evaluate(agent.policy, env, n_samples=2, best_of_n=(), seed=0)
    print(f"{'':>12} {'pi0':>10} {args.agent:>10}")
    for k in ("objective", "gold_reward", "kl", "win_rate", "mean_length"):
        print(f"{k:>12} {ref[k]:>10.4f} {m[k]:>10.4f}   (± {m[k + '_stderr']:.4f})")
    return m


if __name__ == "__main__":
    main()
