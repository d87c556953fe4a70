"""TinyInstruct-v0's reference policy: build time, mean gold reward, best-of-16.

    python benchmarks/tiny_instruct_pi0.py [--size default] [--fresh]

``--fresh`` builds pi0 into an empty cache so the build is timed. Prints the
gold reward of pi0 (mean over samples) and of best-of-n of pi0 for n in
1, 4, 16 on the held-out prompts, via ``rlhf_env.evaluate``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import rlhf_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", choices=["default", "small"])
    parser.add_argument("--fresh", action="store_true", help="time a build into an empty cache")
    parser.add_argument("--n-samples", type=int, default=16)
    args = parser.parse_args()
    if args.fresh:
        os.environ["RLHF_ENV_CACHE"] = tempfile.mkdtemp(prefix="rlhf_env_bench_")
    t = time.perf_counter()
    env = rlhf_env.make("TinyInstruct-v0", size=args.size)
    build = time.perf_counter() - t
    u = env.unwrapped
    t = time.perf_counter()
    m = rlhf_env.evaluate(u.reference, env, n_samples=args.n_samples, best_of_n=(1, 4, 16))
    ev = time.perf_counter() - t
    print(f"TinyInstruct-v0 size={args.size}: make() {build:.1f} s "
          f"({'fresh build' if args.fresh else 'cache as found'}), evaluate {ev:.1f} s")
    print(f"pi0 gold reward        {m['gold_reward']:.3f} +- {m['gold_reward_stderr']:.3f} "
          f"({int(m['n_prompts'])} held-out prompts x {int(m['n_samples'])} samples)")
    for n in (1, 4, 16):
        print(f"best-of-{n:<2d} gold reward  {m[f'best_of_{n}/gold_reward']:.3f}   "
              f"(KL {m[f'best_of_{n}/kl']:.3f})")
    print(f"pi0 win rate vs pi0 {m['win_rate']:.3f}, mean length {m['mean_length']:.1f} chars")


if __name__ == "__main__":
    main()
