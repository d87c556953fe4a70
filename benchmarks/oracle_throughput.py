"""Reward-model oracle throughput: one batched vector step against a loop of single steps.

    python benchmarks/oracle_throughput.py --data-dir ../shared/data/hh-rlhf

Builds HH-RLHF-v0 with the tiny preset (a tiny GPT-2 reward model; cached),
then scores the same pairs two ways on the same RM: ``--batch`` pairs in one
vector-env step (one RM forward pass per RM batch), and the same number of
single-env steps (one forward pass per pair). Prints pairs per second for
both and their ratio. Budget-free: the env is made with a large budget.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import rlhf_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/hh-rlhf")
    parser.add_argument("--batch", type=int, default=64, help="pairs per vector step")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(torch.get_num_threads())
    env = rlhf_env.make("HH-RLHF-v0", preset="tiny", data_dir=args.data_dir,
                        subset="harmless-base", setting="online", query_budget=10**9)
    u = env.unwrapped
    prompts = list(u.train_prompts[: args.batch])
    gen = torch.Generator().manual_seed(0)
    pairs = u.reference.sample(prompts, n=2, generator=gen)
    a1, a2 = [p[0] for p in pairs], [p[1] for p in pairs]
    venv = u.make_vec(args.batch)
    ids = [u.train_prompts.index(p) for p in prompts]

    def batched() -> None:
        venv.reset(seed=0, options={"prompt_ids": ids})
        venv.step((a1, a2))

    def looped() -> None:
        for i, pid in enumerate(ids):
            env.unwrapped.reset(seed=i, options={"prompt_id": pid})
            env.unwrapped.step((a1[i], a2[i]))

    batched(), looped()  # warm-up
    rates = {}
    for name, fn in (("batched vector step", batched), ("loop of single steps", looped)):
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        rates[name] = args.batch / best
        print(f"{name:22s} {rates[name]:9.1f} pairs/s  ({args.batch} pairs in {best * 1e3:.1f} ms)")
    ratio = rates["batched vector step"] / rates["loop of single steps"]
    print(f"ratio batched/looped: {ratio:.1f}x  (RM: tiny GPT-2, {torch.get_num_threads()} threads, "
          f"device {u.reference.device})")


if __name__ == "__main__":
    main()
