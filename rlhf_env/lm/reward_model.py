"""Reward models as reward functions: ``r(prompts, responses) -> array``.

:class:`RewardModel` wraps any ``transformers`` sequence-classification model
with one output (a hub RM, a local folder, or a tiny RM the package trains)
and scores ``prompt + response`` texts in batches. Wrapped in a
:class:`~rlhf_env.oracles.BradleyTerryOracle` it is a preference oracle: the
vector env scores a whole batch of pairs in one forward pass per
``batch_size`` sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_env.errors import DataError, InvalidArgumentError

__all__ = ["RewardModel"]


class RewardModel:
    """Score (prompt, response) pairs with a sequence-classification reward model.

    Args:
        model: a ``...ForSequenceClassification`` with ``num_labels=1``, a hub id or a path.
        tokenizer: its tokenizer (loaded with the model when ``model`` is a name).
        device, dtype: where and in which precision to run it.
        batch_size: sequences per forward pass.
        max_length: longest input in tokens; longer inputs keep their last tokens
            (the response end), and are counted in ``truncated``.
        format_fn: ``(prompt, response) -> text`` (default ``prompt + response``); hub
            RMs trained with a chat template want theirs here.
        revision: the hub revision to load (a model given by name).
        allow_bin_weights: also load ``.bin`` (pickle) weights; safetensors only otherwise.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        format_fn: Callable[[str, str], str] | None = None,
        revision: str | None = None,
        allow_bin_weights: bool = False,
    ) -> None:
        if isinstance(model, (str, Path)):
            model, tokenizer = self.load_pretrained(str(model), tokenizer, revision=revision,
                                                    allow_bin_weights=allow_bin_weights)
        if tokenizer is None:
            raise InvalidArgumentError("RewardModel needs the model's tokenizer")
        if getattr(model.config, "num_labels", 1) != 1:
            raise DataError(
                f"a reward model has one output (num_labels=1), this one has "
                f"{model.config.num_labels}"
            )
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        cfg = model.config
        ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.max_length = int(max_length or ctx or 2048)
        self.batch_size = int(batch_size)
        self.format_fn = format_fn or (lambda p, r: p + r)
        self.truncated = 0

    @staticmethod
    def load_pretrained(where: str, tokenizer: Any = None, *, revision: str | None = None,
                        allow_bin_weights: bool = False) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of a sequence-classification RM (safetensors only unless
        ``allow_bin_weights``), with clear errors."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlhf_env.lm.loading import pretrained_kwargs

        opts = pretrained_kwargs(where, revision, allow_bin_weights)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(where, num_labels=1, **opts)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(
                where, **{k: v for k, v in opts.items() if k == "revision"})
        except ValueError as e:
            raise DataError(f"{where!r} is not a sequence-classification reward model: {e}") from e
        except OSError as e:
            raise DataError(
                f"cannot load a reward model from {where!r} (no local folder of that name with "
                f"safetensors weights, and the hub is unreachable or has no such model): {e}"
                + ("" if allow_bin_weights else ". If it has only pytorch_model.bin (a pickle) "
                   "and you trust it, pass allow_bin_weights=True")
            ) from e
        model.eval()
        return model, tokenizer

    def save(self, path: str | Path) -> Path:
        """Write the model (safetensors) and its tokenizer to the folder ``path``."""
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score_tensor(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Rewards as a float tensor of shape ``(n,)`` (differentiable; for training)."""
        texts = [self.format_fn(p, r) for p, r in zip(prompts, responses)]
        enc = []
        for t in texts:
            ids = list(self.tokenizer(t, add_special_tokens=True)["input_ids"])
            if len(ids) > self.max_length:
                self.truncated += 1
                ids = ids[-self.max_length :]
            enc.append(ids)
        # batch sequences of similar length together (less padding), then restore the order
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        out = []
        for i in range(0, len(order), self.batch_size):
            chunk = [enc[j] for j in order[i : i + self.batch_size]]
            width = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, e in enumerate(chunk):  # right padding; the score is read at the last real token
                ids[j, : len(e)] = torch.tensor(e)
                mask[j, : len(e)] = 1
            out.append(self._last_token_scores(ids.to(self.device), mask.to(self.device)))
        if not out:
            return torch.zeros(0)
        scores = torch.cat(out)
        return scores[torch.argsort(torch.tensor(order, device=scores.device))]

    def _last_token_scores(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Read the score at the last real token by length, not by searching for pad ids
        # (pad may equal a real token such as EOS): ask the model for per-token scores
        # when it exposes its backbone, else trust its own pooling.
        base = getattr(self.model, "base_model", None)
        head = getattr(self.model, "score", None)
        if base is not None and head is not None and base is not self.model:
            h = base(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, t, h)
            last = mask.sum(-1) - 1
            return head(h[torch.arange(len(ids), device=ids.device), last]).squeeze(-1).float()
        return self.model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Rewards as a float64 array of shape ``(n,)``."""
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"got {len(prompts)} prompts and {len(responses)} responses"
            )
        return self.score_tensor(prompts, responses).double().cpu().numpy()
