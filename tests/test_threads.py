"""The one-thread default reaches every path that builds, trains or evaluates small models
(rlhf_env.threads), and never overrides a choice of the user's."""

import os
import subprocess
import sys

TINY = "TinyLMConfig(n_layer=1, n_embd=16, n_head=2)"
# each path starts from torch's own default on a 2-core machine (2 threads, not chosen)
RESET = ("torch.set_num_threads(2); T._state['seen'] = 2; T._state['set'] = None")
PATHS = {
    "build_tiny_lm": f"build_tiny_lm({TINY})",
    "sft": "sft(policy, ['a'], [' b'], steps=1, batch_size=1)",
    "train_reward_model": f"train_reward_model(['a'], [' b'], [' c'], {TINY}, steps=1, "
                          "batch_size=1)",
    "custom env": "PromptsEnv(train_prompts=['a', 'b'], eval_prompts=['c'], reference=policy, "
                  "max_new_tokens=2, setting='online', reward=lambda x, y: np.zeros(len(x)))",
}
SETUP = ("import numpy as np, torch\nimport rlhf_env.threads as T\n"
         "from rlhf_env.envs.custom import PromptsEnv\n"
         "from rlhf_env.models.tiny import TinyLMConfig, build_tiny_lm, byte_tokenizer, sft, "
         "train_reward_model\nfrom rlhf_env.policies import CausalLMPolicy\n"
         f"policy = CausalLMPolicy(build_tiny_lm({TINY}), byte_tokenizer())\n")


def threads_after_each(first: str = "", **env: str) -> dict[str, int]:
    """torch's thread count after each path, run from torch's default (``first`` after it)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RLHF_ENV_NUM_THREADS")}
    body = "".join(f"{RESET}\n{first}\n{code}\nprint(torch.get_num_threads())\n"
                   for code in PATHS.values())
    out = subprocess.run([sys.executable, "-c", SETUP + body], capture_output=True, text=True,
                         env={**base, **env}, check=True)
    return dict(zip(PATHS, map(int, out.stdout.split()[-len(PATHS):])))


def test_each_build_path_sets_the_small_model_default():
    assert threads_after_each() == dict.fromkeys(PATHS, 1)
    assert threads_after_each(RLHF_ENV_NUM_THREADS="2") == dict.fromkeys(PATHS, 2)


def test_a_users_choice_wins():
    assert threads_after_each(OMP_NUM_THREADS="2") == dict.fromkeys(PATHS, 2)
    assert threads_after_each("torch.set_num_threads(3)") == dict.fromkeys(PATHS, 3)
