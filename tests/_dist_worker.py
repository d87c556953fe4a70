"""Worker for test_distributed.py: a few DPO steps on a tiny LM, in one or several processes.

Run as ``torchrun --nproc_per_node N tests/_dist_worker.py OUT`` (or plain python).
Each process writes its final parameters to ``OUT/rank<r>.pt``.
"""

import os
import sys

import torch

from agents.data import PreferenceData
from agents.trainer import train_preferences
from rlhf_env.models.tiny import TinyLMConfig, build_tiny_lm, byte_tokenizer
from rlhf_env.policies import CausalLMPolicy


def main(out: str) -> None:
    torch.set_num_threads(1)
    ref = CausalLMPolicy(build_tiny_lm(TinyLMConfig(n_positions=32, seed=4)), byte_tokenizer(),
                         max_length=32).freeze()
    policy = ref.trainable_copy()
    letters = "abcdefgh"
    data = PreferenceData(
        [f"q {letters[i % 8]} =" for i in range(16)],
        [f" {letters[(i + 1) % 8]}" for i in range(16)],
        [f" {letters[(i + 3) % 8]} ok" for i in range(16)],
    )
    # an optimiser step sees 8 pairs however many processes share them (TRL's convention)
    per_device = 8 // int(os.environ.get("WORLD_SIZE", "1"))
    result = train_preferences(policy, ref, data, beta=0.5, num_train_epochs=2,
                               per_device_train_batch_size=per_device, learning_rate=1e-3,
                               seed=0, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    state = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    torch.save({"state": state, "loss": result.final_metrics["loss"], "steps": result.steps},
               os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
