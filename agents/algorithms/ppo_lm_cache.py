"""One forward pass per sequence for token-level PPO: KV-cached rollouts, teacher-forced updates.

The token MDP of :mod:`agents.algorithms.ppo_lm` has one state per response token (prompt +
response so far). Encoding each state from scratch costs about L forward passes for a
response of L tokens, in the rollout and in every PPO epoch. Two facts make one enough:

1. In a causal LM the outputs at position i depend only on tokens 0..i: the next-token
   logits and last hidden state of a state are inside the forward pass of any longer state
   it is a prefix of (the teacher-forced pass of TRL's and OpenRLHF's PPO).
2. SB3 stores each env's steps in order, so an episode's states are consecutive and state
   t+1 is state t followed by action t.

:class:`KVCacheStepper` serves the rollout: called once per SB3 step with the batch's
states, it advances each row that grew by one token with one cached decoding step and
encodes only rows that started a new episode. :func:`run_outputs` serves the update: it
groups consecutive rows into runs (:func:`prefix_runs`) and evaluates each run with one
forward pass of its longest state. :class:`SequenceRolloutBuffer` hands the update
minibatches in which each segment's tokens are consecutive and in order.

States are left-padded rows of token ids, -1 = padding (the TokenEnv's observations).
Shapes: b rows, w tokens wide, V vocabulary, H hidden size, R runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from torch import nn

from rlhf_env.errors import InvalidArgumentError

__all__ = ["lm_inputs", "prefix_runs", "run_outputs", "KVCacheStepper", "SequenceRolloutBuffer",
           "cache_is_editable"]


def lm_inputs(obs: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) for left-padded states (-1 = padding).

    Columns that are padding in every row are dropped first (states are padded to the
    longest possible prompt; a batch rarely needs that width).
    """
    obs = obs.long()
    keep = (obs >= 0).any(0).nonzero()
    obs = obs[:, int(keep[0]) if len(keep) else 0:]
    mask = (obs >= 0).long()
    ids = torch.where(mask.bool(), obs, torch.full_like(obs, pad_id))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def prefix_runs(obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group rows into runs in which each row's state followed by its action is the next row's.

    Returns ``(run, back)``, each ``(b,)`` long: ``run[i]`` the index of row i's run
    (0, 1, ... in row order), ``back[i]`` how many tokens row i's state is shorter than
    its run's last state (0 on each run's last row). Any row order is valid; rows of
    shuffled states simply form runs of one.
    """
    obs, actions = obs.long(), actions.long().reshape(-1)
    grows = ((obs[1:, :-1] == obs[:-1, 1:]).all(1) & (obs[1:, -1] == actions[:-1])
             & (obs[:-1, 0] < 0))  # state i+1 = state i + action i, nothing shifted out
    starts = torch.cat([torch.ones(min(1, len(obs)), dtype=torch.bool, device=obs.device), ~grows])
    run = starts.long().cumsum(0) - 1
    rows = torch.arange(len(obs), device=obs.device)
    last = torch.zeros(int(run[-1]) + 1 if len(obs) else 0, dtype=torch.long, device=obs.device)
    last = last.scatter_reduce(0, run, rows, reduce="amax", include_self=False)
    return run, last[run] - rows


def _accepts(lm: nn.Module, name: str) -> bool:
    return name in inspect.signature(lm.forward).parameters


def run_outputs(lm: nn.Module, obs: torch.Tensor, actions: torch.Tensor, pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits and last hidden state of each state, one forward pass per run.

    ``obs`` ``(b, w)`` states, ``actions`` ``(b,)`` the token taken in each (used only to
    find runs). Returns ``(logits (b, V), hidden (b, H))`` in the model's dtype,
    differentiable when grad is enabled: the same values as a forward pass per state,
    computed from each run's last state (teacher forcing).
    """
    run, back = prefix_runs(obs, actions)
    ids, mask, pos = lm_inputs(obs[back == 0], pad_id)  # (R, w): the runs' last states
    kw: dict[str, Any] = {"logits_to_keep": int(back.max()) + 1} if _accepts(lm, "logits_to_keep") else {}
    out = lm(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
             use_cache=False, **kw)
    # left padding: each run's last state ends in the last column; row i ends back[i] earlier
    logits = out.logits[run, out.logits.shape[1] - 1 - back]  # (b, V)
    hidden = out.hidden_states[-1][run, ids.shape[1] - 1 - back]  # (b, H)
    return logits, hidden


def cache_is_editable(cache: Any) -> bool:
    """Whether :class:`KVCacheStepper` can edit ``cache`` (a plain ``DynamicCache``)."""
    try:
        _layers(cache)
    except InvalidArgumentError:
        return False
    return True


def _layers(cache: Any) -> list[Any]:
    """The layers of a plain (not sliding-window) ``DynamicCache``, each with ``keys``/``values``."""
    from transformers.cache_utils import DynamicCache

    layers = getattr(cache, "layers", None)
    if (isinstance(cache, DynamicCache) and layers is not None
            and all(type(layer).__name__ == "DynamicLayer" for layer in layers)):
        return list(layers)
    if isinstance(cache, DynamicCache) and layers is not None:
        kinds = sorted({type(layer).__name__ for layer in layers} - {"DynamicLayer"})
        have = f"a DynamicCache with {' and '.join(kinds)} layers"
    elif isinstance(cache, DynamicCache):
        have = "a DynamicCache without per-layer caches (transformers < 4.56)"
    else:
        have = f"a {type(cache).__name__}"
    raise InvalidArgumentError(
        f"rollout='cached' needs a model whose KV cache is a DynamicCache of DynamicLayer "
        f"layers only (transformers >= 4.56); this model's is {have}: use rollout='per_state'")


class KVCacheStepper:
    """Next-token logits and last hidden states of a batch of states, with one KV cache.

    Called once per rollout step with the batch's states ``(b, w)``. A row whose state is
    its previous state plus one token advances by one cached decoding step (the new token
    only); a row that starts a new episode is encoded on its own and its keys and values
    are written into its row of the cache, masking the old episode out. Each response
    token thus costs one decoding step and each prompt one encoding, as in a sampler.

    The cache is only valid while the weights are unchanged: make a new stepper for each
    rollout (:meth:`CausalLMActorCritic.cached_rollout <agents.algorithms.ppo_lm.
    CausalLMActorCritic.cached_rollout>` does).
    """

    def __init__(self, lm: nn.Module, pad_id: int) -> None:
        self.lm, self.pad_id = lm, int(pad_id)
        self.cache_kw = "cache" if _accepts(lm, "cache") else "past_key_values"
        self.prev: torch.Tensor | None = None  # (b, w) the last call's states
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None  # and its outputs
        self.cache: Any = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # (b, t) over the cache's positions
        self.pos = torch.zeros(0, dtype=torch.long)  # (b,) position id of each row's last token

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                 cache: Any = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        kw = {} if cache is None else {self.cache_kw: cache}
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                      output_hidden_states=True, **kw)
        new_cache = getattr(out, "cache", None) or out.past_key_values
        return out.logits[:, -1], out.hidden_states[-1][:, -1], new_cache

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(logits (b, V), hidden (b, H))`` at each state's last token."""
        obs = obs.long()
        prev = self.prev
        if prev is None or prev.shape != obs.shape:
            return self._encode_all(obs)
        if self.last is not None and torch.equal(obs, prev):  # the same states again
            return self.last
        grew = (obs[:, :-1] == prev[:, 1:]).all(1) & (prev[:, 0] < 0) & (obs[:, -1] >= 0)
        if not bool(grew.any()):
            return self._encode_all(obs)
        # one decoding step for all rows; a row that starts afresh feeds a masked pad token
        tok = torch.where(grew, obs[:, -1], torch.full_like(obs[:, -1], self.pad_id))
        self.mask = torch.cat([self.mask, grew[:, None].long()], 1)
        self.pos = torch.where(grew, self.pos + 1, self.pos)
        logits, hidden, self.cache = self._forward(tok[:, None], self.mask, self.pos[:, None],
                                                   self.cache)
        fresh = (~grew).nonzero()[:, 0]
        if len(fresh):
            logits, hidden = logits.clone(), hidden.clone()
            logits[fresh], hidden[fresh] = self._encode_rows(obs[fresh], fresh)
        self.prev, self.last = obs, (logits, hidden)
        return logits, hidden

    def _encode_all(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, pos = lm_inputs(obs, self.pad_id)
        logits, hidden, self.cache = self._forward(ids, mask, pos)
        _layers(self.cache)  # fail early on a cache this stepper cannot edit
        self.mask, self.pos, self.prev = mask, pos[:, -1], obs
        self.last = (logits, hidden)
        return logits, hidden

    def _encode_rows(self, obs: torch.Tensor, rows: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``obs`` afresh and write its keys/values into ``rows``, right-aligned."""
        ids, mask, pos = lm_inputs(obs, self.pad_id)
        logits, hidden, new = self._forward(ids, mask, pos)
        p, t = ids.shape[1], self.mask.shape[1]
        layers = _layers(self.cache)
        if p > t:  # the new prompt is longer than the cache: widen every row on the left
            for layer in layers:
                layer.keys = F.pad(layer.keys, (0, 0, p - t, 0))
                layer.values = F.pad(layer.values, (0, 0, p - t, 0))
            self.mask, t = F.pad(self.mask, (p - t, 0)), p
        for layer, src in zip(layers, _layers(new)):  # keys/values: (b, heads, t, head_dim)
            layer.keys[rows, :, t - p:] = src.keys
            layer.values[rows, :, t - p:] = src.values
        self.mask[rows] = 0
        self.mask[rows, t - p:] = mask
        self.pos[rows] = pos[:, -1]
        return logits, hidden


class SequenceRolloutBuffer(RolloutBuffer):
    """SB3's ``RolloutBuffer`` whose minibatches keep each segment's tokens together, in order.

    A segment is one env's steps of one episode within a rollout (an episode cut by the
    rollout's end gives a segment in each of two rollouts). Overrides only ``get``: SB3
    shuffles tokens; this shuffles segments (with the same global numpy RNG), lays their
    tokens end to end and cuts minibatches of exactly ``batch_size`` tokens, so the number
    and size of minibatches are SB3's. :func:`run_outputs` then evaluates each segment in
    one forward pass; a segment cut by a minibatch boundary costs one more.
    """

    def segments(self) -> list[np.ndarray]:
        """Each segment's flat indices in SB3's flattened layout (env * buffer_size + step)."""
        out = []
        for e in range(self.n_envs):
            cuts = [0, *(np.flatnonzero(self.episode_starts[1:, e]) + 1), self.buffer_size]
            base = e * self.buffer_size
            out += [np.arange(base + a, base + b) for a, b in zip(cuts, cuts[1:])]
        return out

    def get(self, batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        assert self.full, "the rollout buffer is not full"
        segments = self.segments()
        indices = np.concatenate([segments[i] for i in np.random.permutation(len(segments))])
        if not self.generator_ready:  # as SB3: (steps, envs, ...) -> (envs * steps, ...)
            for name in ("observations", "actions", "values", "log_probs", "advantages",
                         "returns"):
                setattr(self, name, self.swap_and_flatten(getattr(self, name)))
            self.generator_ready = True
        size = len(indices) if batch_size is None else batch_size
        for start in range(0, len(indices), size):
            yield self._get_samples(indices[start:start + size])
