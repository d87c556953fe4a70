"""Reward models as reward functions: ``r(prompts, responses) -> array``.

:class:`RewardModel` wraps any ``transformers`` sequence-classification model with one
output (a hub RM, a local folder, an RM built on a policy's backbone by
:meth:`RewardModel.from_policy`, or a tiny RM the package trains) and scores
(prompt, response) pairs in batches. Wrapped in a
:class:`~rlhf_env.oracles.BradleyTerryOracle` it is a preference oracle.

**What the model reads.** With ``encoder`` (a policy's
:class:`~rlhf_env.lm.chat.PromptEncoder`, as :meth:`RewardModel.from_policy` passes)
a pair is the policy's own token ids: the prompt through its chat template, the
response and its terminator, as TRL's reward trainer reads a conversation. Otherwise
``format_fn(prompt, response)`` (default: the prompt's text followed by the response)
is tokenized with the tokenizer's special tokens. Inputs longer than ``max_length``
keep their leading special tokens (BOS / CLS) and their last tokens (the response's
end), and are counted in ``truncated``. The score is read at each sequence's last real
token, found by length (pad may equal a real token), or by the model's own pooling
(BERT's CLS head).

:func:`train_bt` fits any of them with the Bradley-Terry loss
(-log sigmoid(r(x, chosen) - r(x, rejected)); Ouyang et al. 2022, Eq. 1), optionally as
a LoRA adapter plus the score head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.lm.chat import Prompt, PromptEncoder, as_messages, messages_to_text, special_ids

__all__ = ["RewardModel", "train_bt", "keep_head_tail", "READS_NAME"]

READS_NAME = "reward_model.json"


def keep_head_tail(ids: Sequence[int], limit: int, special: set[int]) -> tuple[list[int], bool]:
    """``ids`` cut to ``limit`` tokens: the leading special tokens, then the last tokens."""
    ids = list(ids)
    if len(ids) <= limit:
        return ids, False
    h = 0
    while h < len(ids) and ids[h] in special and h < limit - 1:
        h += 1
    return ids[:h] + ids[len(ids) - (limit - h):], True


def _text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else messages_to_text(as_messages(prompt))


class RewardModel:
    """Score (prompt, response) pairs with a sequence-classification reward model.

    Args:
        model: a ``...ForSequenceClassification`` with ``num_labels=1``, a hub id or a path.
        tokenizer: its tokenizer (loaded with the model when ``model`` is a name).
        device, dtype: where and in which precision to run it.
        batch_size: sequences per forward pass.
        max_length: longest input in tokens (see the module docstring).
        format_fn: ``(prompt text, response) -> text`` (default ``prompt + response``).
        encoder: a :class:`~rlhf_env.lm.chat.PromptEncoder` whose token ids the model reads
            (overrides ``format_fn``).
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
        encoder: PromptEncoder | None = None,
        revision: str | None = None,
        allow_bin_weights: bool = False,
    ) -> None:
        if isinstance(model, (str, Path)):
            reads = Path(model) / READS_NAME
            if reads.is_file() and encoder is None and format_fn is None:  # saved by save()
                import json

                saved = json.loads(reads.read_text())
                max_length = max_length or saved.get("max_length")
                chat = saved.get("chat_template")
                model, tokenizer = self.load_pretrained(str(model), tokenizer)
                if saved.get("encoder"):
                    encoder = PromptEncoder(tokenizer, chat_template=chat)
            else:
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
        # the tokenizer is often the policy's own: pad with its pad, else its EOS (SEP),
        # without changing it
        pad = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id,
                                getattr(tokenizer, "sep_token_id", None)) if i is not None), 0)
        self.pad_id = int(pad)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.pad_id
        cfg = model.config
        ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.max_length = int(max_length or ctx or 2048)
        self.batch_size = int(batch_size)
        self.format_fn = format_fn
        self.encoder = encoder
        self.special = special_ids(tokenizer)
        self.truncated = 0

    @classmethod
    def from_policy(cls, policy: Any, *, seed: int = 0, batch_size: int = 64,
                    max_length: int | None = None) -> RewardModel:
        """A reward model on ``policy``'s architecture, tokenizer and weights, as TRL's reward
        trainer starts from the SFT model: ``AutoModelForSequenceClassification`` of the
        policy's config with the policy's backbone weights (an adapter merged in) and a
        fresh score head (drawn from ``seed``), reading the policy's token ids (its chat
        template and terminator), on the policy's device and in its dtype."""
        from transformers import AutoModelForSequenceClassification

        from rlhf_env.lm.lora import AdapterSlot

        source = policy.merged() if getattr(policy, "adapter", None) is not None else policy
        lm = source.model
        slot = AdapterSlot.of(lm)
        state = slot.base_state_dict(lm) if slot is not None else lm.state_dict()
        cfg = type(lm.config).from_dict(lm.config.to_dict())
        cfg.num_labels = 1
        cfg.pad_token_id = policy.pad_id
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = AutoModelForSequenceClassification.from_config(cfg)
            except ValueError as e:
                raise InvalidArgumentError(
                    f"transformers has no sequence-classification head for "
                    f"{cfg.model_type!r} models, so no reward model can be built on this "
                    f"policy's backbone: choose another backbone ({e})") from e
        own = model.state_dict()
        copied = [k for k in own if k in state and own[k].shape == state[k].shape]
        head = [k for k in own if k not in copied]
        if not copied or any(not k.startswith(("score.", "classifier.")) for k in head):
            raise DataError(
                f"cannot carry {type(lm).__name__}'s weights into "
                f"{type(model).__name__}: no match for {head[:5]}")
        model.load_state_dict({k: state[k] for k in copied}, strict=False)
        model.to(device=policy.device, dtype=next(lm.parameters()).dtype)
        model.eval()
        return cls(model, policy.tokenizer, batch_size=batch_size,
                   max_length=max_length or policy.max_length, encoder=policy.encoder)

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
        """Write the model (safetensors, an adapter merged in), its tokenizer and how it
        reads its inputs (``reward_model.json``) to the folder ``path``."""
        import json

        from rlhf_env.lm.lora import AdapterSlot
        from rlhf_env.progress import quiet_transformers

        path = Path(path)
        model = self.model
        slot = AdapterSlot.of(model)
        if slot is not None:  # save the merged weights: a plain HF sequence classifier
            state = slot.merged_state_dict(model, slot.active)  # type: ignore[arg-type]
            with torch.random.fork_rng(devices=[]):
                model = type(model)(type(model.config).from_dict(model.config.to_dict()))
            model.load_state_dict(state, strict=True)
        with quiet_transformers():
            model.save_pretrained(path, safe_serialization=True)
            self.tokenizer.save_pretrained(path)
        reads = {"encoder": self.encoder is not None, "max_length": self.max_length,
                 "chat_template": None if self.encoder is None else self.encoder.use_template}
        (path / READS_NAME).write_text(json.dumps(reads, indent=1))
        return path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompt: Prompt, response: str) -> list[int]:
        """The token ids the model scores for one pair, cut to ``max_length``."""
        if self.encoder is not None:
            ctx, resp = self.encoder.split(prompt, response)
            ids = ctx + resp
        else:
            fmt = self.format_fn or (lambda p, r: p + r)
            ids = list(self.tokenizer(fmt(_text(prompt), response), add_special_tokens=True,
                                      verbose=False)["input_ids"])  # cut below, not warned
        ids, cut = keep_head_tail(ids, self.max_length, self.special)
        self.truncated += int(cut)
        return ids

    def score_tensor(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        """Rewards as a float tensor of shape ``(n,)`` (differentiable; for training)."""
        enc = [self.encode(p, r) for p, r in zip(prompts, responses)]
        # batch sequences of similar length together (less padding), then restore the order
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        out = []
        for i in range(0, len(order), self.batch_size):
            chunk = [enc[j] for j in order[i : i + self.batch_size]]
            width = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
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
    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> np.ndarray:
        """Rewards as a float64 array of shape ``(n,)``."""
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"got {len(prompts)} prompts and {len(responses)} responses"
            )
        was = self.model.training
        self.model.eval()
        try:
            return self.score_tensor(prompts, responses).double().cpu().numpy()
        finally:
            self.model.train(was)


def train_bt(
    rm: RewardModel,
    prompts: Sequence[Prompt],
    chosen: Sequence[str],
    rejected: Sequence[str],
    *,
    steps: int = 200,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    lora: Any = None,
    progress: bool | None = False,
    desc: str = "reward model",
) -> list[float]:
    """Fit ``rm`` in place with the Bradley-Terry loss; returns the loss of every step.

    Minimises mean -log sigmoid(r(x, chosen) - r(x, rejected)) over minibatches of
    ``batch_size`` pairs drawn epoch by epoch (shuffled by ``seed``), AdamW at
    ``learning_rate`` with a 5 % linear warm-up and cosine decay
    (``transformers.get_cosine_schedule_with_warmup``), gradients clipped at norm 1, dropout
    off. With ``lora`` (:class:`~rlhf_env.lm.lora.LoraSettings`) the backbone is frozen and
    a LoRA adapter plus the score head are trained; the adapter stays in the model.
    """
    from transformers import get_cosine_schedule_with_warmup

    from rlhf_env.lm.loading import disable_dropout
    from rlhf_env.progress import bar

    n = len(prompts)
    if not (n == len(chosen) == len(rejected)) or n == 0:
        raise InvalidArgumentError(
            f"train_bt needs equal, non-empty prompts, chosen and rejected ({n}, {len(chosen)}, "
            f"{len(rejected)})")
    model = rm.model
    disable_dropout(model)
    if lora is not None:
        from rlhf_env.lm.lora import AdapterSlot

        for p in model.parameters():
            p.requires_grad_(False)
        slot = AdapterSlot.attach(model, lora)
        weights = {k: torch.nn.Parameter(v) for k, v in slot.new_weights(
            torch.Generator().manual_seed(seed)).items()}
        slot.activate(weights)
        head = getattr(model, "score", None) or getattr(model, "classifier", None)
        params = list(weights.values()) + ([p.requires_grad_(True) for p in head.parameters()]
                                           if head is not None else [])
        rm.adapter_weights = weights  # kept alive: the slot points at them
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)
    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, n)
    order, pos = torch.randperm(n, generator=gen), 0
    model.train()
    losses: list[float] = []
    progress_bar = bar(steps, desc, progress)
    try:
        for _ in range(steps):
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + bs].tolist()
            pos += bs
            ps = [prompts[i] for i in idx]
            r = rm.score_tensor(ps + ps, [chosen[i] for i in idx] + [rejected[i] for i in idx])
            loss = -torch.nn.functional.logsigmoid(r[: len(idx)] - r[len(idx):]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            progress_bar.update(1)
    finally:
        progress_bar.close()
        model.eval()
    return losses
