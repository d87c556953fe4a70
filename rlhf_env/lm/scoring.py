"""Scoring responses after their contexts with one forward pass each: the low-level half of
a causal LM policy (no sampling, no text; token ids in, logits out).

A **tree** is ``(context, [response_1, ..., response_k])``. With one response it is an
ordinary causal sequence. With several (a DPO pair's chosen and rejected, or the n samples
of one prompt) each response attends to the context and to itself only, and its position
ids continue from the context's end: it is scored as if it followed the context alone
while the context is computed once (prefix sharing, Wang et al. 2024, arXiv 2410.20305).
Trees can also be packed several to a row. Whether a model allows it is decided by
:meth:`Scorer.shares_prefixes` and checked once per model against ordinary rows
(:meth:`Scorer.check_sharing`); a model that fails falls back to one row per response.

Log-softmaxes run in float32 over chunks of rows (:func:`rowwise`), never over a whole
batch's float32 logits at once, and are recomputed in backward rather than kept.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rlhf_env.progress import log

__all__ = ["Scorer", "Tree", "nucleus_mask", "nucleus_log_probs", "gather_log_softmax",
           "rowwise", "attention_impl", "CHUNK_ELEMENTS", "SHARING_KEY"]

# rows of float32 (tokens, vocab) log-softmax computed at once: 2**24 floats = 64 MB
CHUNK_ELEMENTS = 1 << 24
SHARING_KEY = "_rlhf_env_prefix_sharing"  # the model's verdict, once checked
Tree = tuple[list[int], list[list[int]]]


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The top-p nucleus over the last axis: the smallest set of most likely tokens whose
    mass reaches ``top_p`` (the top token always kept), as a bool mask shaped like ``probs``."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    return torch.zeros_like(keep).scatter(-1, order, keep)


def nucleus_log_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """log q(token) over the last axis, q the distribution a sampler draws from:
    softmax(logits / temperature) restricted to the top-p nucleus (:func:`nucleus_mask`)
    and renormalised; -inf outside it. ``temperature=0`` is greedy: 0 at the argmax, -inf
    elsewhere. (A token at the nucleus boundary can fall on either side between a sampler's
    cached forward pass and a full one, by rounding.)"""
    if temperature == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -torch.inf).scatter(-1, top, 0.0)
    if top_p >= 1.0:
        return torch.log_softmax(logits / temperature, dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    kept = probs * nucleus_mask(probs, top_p)
    return torch.log(kept / kept.sum(-1, keepdim=True))


def gather_log_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row, in float32: ``(n, V), (n, 1) -> (n,)``."""
    x = logits.float()
    return x.gather(-1, targets)[:, 0] - x.logsumexp(-1)


def rowwise(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to float32 chunks of rows of ``tensors[0]`` (N, V) and the matching
    rows of the others; recomputed in backward instead of keeping float32 copies."""
    n, v = tensors[0].shape
    step = max(1, CHUNK_ELEMENTS // max(1, v))
    out = []
    for s in range(0, n, step):
        part = [t[s : s + step] for t in tensors]
        if torch.is_grad_enabled() and any(t.requires_grad for t in part):
            out.append(checkpoint(fn, *part, use_reentrant=False))
        else:
            out.append(fn(*part))
    return torch.cat(out) if out else tensors[0].new_zeros(0, dtype=torch.float32)


def attention_impl(model: nn.Module) -> str | None:
    """The attention implementation transformers runs (``attn_implementation`` at load);
    transformers keeps it only in this underscored config field, which TRL reads too."""
    return getattr(model.config, "_attn_implementation", None)  # noqa: SLF001


class Scorer:
    """Forward passes over trees of token ids for one causal LM.

    Args:
        model: a ``transformers`` causal LM.
        pad_id: the id put in padding positions (masked by lengths, never by value).
        activate: called before every forward pass (a LoRA policy points the model's
            adapter slot at its own adapter, or turns it off for pi0).
    """

    def __init__(self, model: nn.Module, pad_id: int,
                 activate: Callable[[], None] | None = None) -> None:
        self.model = model
        self.pad_id = int(pad_id)
        self.activate = activate or (lambda: None)
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_kw = "logits_to_keep" in params
        self.pos_kw = "position_ids" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @staticmethod
    def chunks(sizes: Sequence[int], batch_size: int) -> Iterator[list[int]]:
        """Index chunks of items of ``sizes`` positions, for one forward pass each, similar
        sizes together."""
        order = sorted(range(len(sizes)), key=lambda i: sizes[i])
        for i in range(0, len(order), batch_size):
            yield order[i : i + batch_size]

    # -- one forward pass ------------------------------------------------------------------
    def tree_logits(self, chunk: Sequence[Tree], *, pack: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass over ``chunk``'s trees (see the module docstring).

        ``pack=True`` also puts several trees in one row (first fit, rows no wider than the
        longest tree), each attending to itself only. Rows are left-padded. Any tree
        structure beyond one response per row needs a 4-D mask (:meth:`shares_prefixes`).
        Returns ``(logits, targets, trees, segments)``, ``(N, V)`` and ``(N,)`` each: logits
        at every response position (the model's dtype), the token each predicts, the index
        of its tree in ``chunk`` and of its response within the tree.
        """
        self.activate()
        dev = self.device
        sizes = [len(c) + sum(len(r) for r in rs) for c, rs in chunk]
        width = max(sizes)
        rows: list[list[int]] = []  # tree indices per row
        if pack:
            room: list[int] = []
            for t in sorted(range(len(chunk)), key=lambda t: -sizes[t]):
                j = next((j for j, free in enumerate(room) if free >= sizes[t]), None)
                if j is None:
                    rows.append([t])
                    room.append(width - sizes[t])
                else:
                    rows[j].append(t)
                    room[j] -= sizes[t]
        else:
            rows = [[t] for t in range(len(chunk))]
        used = [sum(sizes[t] for t in row) for row in rows]
        # logits are needed from the first predicting position (a context's last) on
        keep_w = width - min(width - u + len(chunk[row[0]][0]) - 1 for u, row in zip(used, rows))
        tree = pack or any(len(rs) > 1 for _, rs in chunk)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        group = torch.full((len(rows), width), -1, dtype=torch.long)  # tree in row; -1 pad
        seg = torch.zeros((len(rows), width), dtype=torch.long)  # 0 context, s + 1 response s
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        at, row_of, targets, trees, segs = [], [], [], [], []
        for j, row in enumerate(rows):
            o = width - used[j]
            for g, t in enumerate(row):
                c, rs = chunk[t]
                ids[j, o : o + sizes[t]] = torch.tensor(list(c) + [x for r in rs for x in r])
                group[j, o : o + sizes[t]] = g
                pos[j, o : o + len(c)] = torch.arange(len(c))
                last_ctx, o = o + len(c) - 1, o + len(c)
                for s, r in enumerate(rs):
                    seg[j, o : o + len(r)] = s + 1
                    pos[j, o : o + len(r)] = torch.arange(len(c), len(c) + len(r))
                    # position t predicts token t + 1; each response's first token is
                    # predicted at the context's last position
                    at.extend([last_ctx] + list(range(o, o + len(r) - 1)))
                    row_of.extend([j] * len(r))
                    targets.extend(r)
                    trees.extend([t] * len(r))
                    segs.extend([s] * len(r))
                    o += len(r)
        if tree:
            gq, gk = group[:, :, None], group[:, None, :]
            sq, sk = seg[:, :, None], seg[:, None, :]
            allowed = (torch.ones(width, width, dtype=torch.bool).tril()[None] & (gk == gq)
                       & (gk >= 0) & ((sk == 0) | (sk == sq))) | torch.eye(width, dtype=torch.bool)
            mask: torch.Tensor = allowed[:, None].to(dev)
            if attention_impl(self.model) != "sdpa":  # eager adds the mask
                dtype = next(self.model.parameters()).dtype
                mask = torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill(
                    ~mask, torch.finfo(dtype).min)
        else:
            mask = (group >= 0).long().to(dev)
        kw: dict[str, Any] = {"logits_to_keep": keep_w} if self.keep_kw else {}
        if self.pos_kw:
            kw["position_ids"] = pos.to(dev)
        logits = self.model(input_ids=ids.to(dev), attention_mask=mask, use_cache=False,
                            **kw).logits
        tail = torch.tensor(at, dtype=torch.long) - (width - logits.shape[1])
        return (logits[torch.tensor(row_of, device=dev), tail.to(dev)],
                torch.tensor(targets, device=dev), torch.tensor(trees, device=dev),
                torch.tensor(segs, device=dev))

    # -- prefix sharing --------------------------------------------------------------------
    def shares_prefixes(self, lengths: int) -> bool:
        """Whether trees with several responses may be scored in one row on rows of up to
        ``lengths`` positions: a 4-D mask (sdpa or eager attention), position ids, no ALiBi
        and no sliding window shorter than the row."""
        cfg = self.model.config
        if not self.pos_kw or attention_impl(self.model) not in ("sdpa", "eager"):
            return False
        if getattr(cfg, "alibi", False) or cfg.model_type in ("bloom", "mpt", "baichuan"):
            return False
        if getattr(cfg, "attention_chunk_size", None):
            return False
        window = getattr(cfg, "sliding_window", None)
        return not (isinstance(window, int) and 0 < window < lengths)

    def may_share(self, lengths: int) -> bool:
        """:meth:`shares_prefixes`, unless the model failed :meth:`check_sharing`."""
        return self.model.__dict__.get(SHARING_KEY, True) and self.shares_prefixes(lengths)

    def sharing_checked(self) -> bool:
        return SHARING_KEY in self.model.__dict__

    @torch.no_grad()
    def check_sharing(self, chunk: Sequence[Tree]) -> bool:
        """Packed, prefix-shared rows against ordinary rows on (up to) four trees of a batch
        with several responses each (at most 1e-3 nats apart per token); the verdict is kept
        on the model, and a failure is logged."""
        chunk = [t for t in chunk if len(t[1]) > 1][:4]
        logits, targets, r, g = self.tree_logits(chunk, pack=True)
        tok = rowwise(gather_log_softmax, logits, targets[:, None]).double()
        k = max(len(rs) for _, rs in chunk)
        shared = torch.zeros(len(chunk), k, dtype=torch.float64, device=self.device)
        shared.index_put_((r, g), tok, accumulate=True)
        plain = [(c, [resp]) for c, rs in chunk for resp in rs]
        logits, targets, r, _ = self.tree_logits(plain)
        tok = rowwise(gather_log_softmax, logits, targets[:, None]).double()
        rows = torch.zeros(len(plain), dtype=torch.float64, device=self.device).index_add(0, r, tok)
        flat = torch.cat([shared[i, : len(rs)] for i, (_, rs) in enumerate(chunk)])
        n_tok = torch.tensor([len(resp) for _, rs in chunk for resp in rs],
                             dtype=torch.float64, device=self.device)
        diff = float(((flat - rows).abs() / n_tok).max())
        ok = diff <= 1e-3
        if not ok:
            log.warning("%s: scoring responses after one shared prompt differs from scoring "
                        "them apart by %.2g per token; using one row per response",
                        type(self.model).__name__, diff)
        self.model.__dict__[SHARING_KEY] = ok
        return ok

    # -- scores over many trees ------------------------------------------------------------
    def score(self, items: Sequence[tuple[Sequence[int], Sequence[int]]],
              fns: Sequence[Callable[..., torch.Tensor]], *, batch_size: int,
              share: bool = True, others: Sequence[Scorer] = (),
              dtype: torch.dtype = torch.float32,
              keys: Sequence[Any] | None = None) -> list[torch.Tensor]:
        """Per-item sums of per-token scores: ``fns[i](logits, *others' logits, targets)``
        returns one value per response token; item j's tokens are summed into
        ``out[i][j]``. Items with the same context form one tree when ``share`` and the model
        allows it (:meth:`may_share`, checked once per model), so a prompt with n responses
        costs ``P + sum(R)`` positions, not ``n P + sum(R)``. ``others``: scorers of other
        models over the same vocabulary, run on the same rows (e.g. the reference, for a
        KL), whose logits are passed after this model's. ``keys``: only items with the same
        key (and context) share a tree (a DPO pair's two responses: the trees, and so the
        float rounding, do not depend on what else is in the batch). Differentiable through
        this model's logits when grad is on. Returns ``len(fns)`` tensors of shape
        ``(len(items),)``."""
        n = len(items)
        dev = self.device
        out = [torch.zeros(n, device=dev, dtype=dtype) for _ in fns]
        if n == 0:
            return out
        groups: dict[tuple[Any, tuple[int, ...]], list[int]] = {}
        for j, (c, _) in enumerate(items):
            groups.setdefault((None if keys is None else keys[j], tuple(c)), []).append(j)
        longest = max(len(c) + len(r) for c, r in items)
        trees: list[tuple[list[int], list[list[int]], list[int]]] = []
        if share and any(len(g) > 1 for g in groups.values()) and all(
                s.may_share(longest) for s in (self, *others)):
            for (_, c), js in groups.items():
                trees.append((list(c), [list(items[j][1]) for j in js], js))
        else:
            share = False
            trees = [(list(c), [list(r)], [j]) for j, (c, r) in enumerate(items)]
        sizes = [len(c) + sum(map(len, rs)) for c, rs, _ in trees]
        for idx in self.chunks(sizes, batch_size):
            chunk = [trees[i] for i in idx]
            plain = [(c, rs) for c, rs, _ in chunk]
            if share and any(len(rs) > 1 for rs in (t[1] for t in chunk)):
                for s in (self, *others):
                    if not s.sharing_checked() and not s.check_sharing(plain):
                        return self.score(items, fns, batch_size=batch_size, share=False,
                                          others=others, dtype=dtype, keys=keys)
            logits, targets, t_of, seg = self.tree_logits(plain, pack=share)
            extra = [o.tree_logits(plain, pack=share)[0] for o in others]
            width = max(len(js) for _, _, js in chunk)
            table = torch.tensor([js + [0] * (width - len(js)) for _, _, js in chunk], device=dev)
            where = table[t_of, seg]
            for k, fn in enumerate(fns):
                tok = rowwise(fn, logits, *extra, targets[:, None])
                out[k] = out[k].index_add(0, where.to(out[k].device), tok.to(dtype))
        return out
