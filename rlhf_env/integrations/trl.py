"""The env inside TRL: its oracle as ``reward_funcs``, its data as TRL datasets.

TRL's online trainers (``GRPOTrainer``, ``RLOOTrainer``, the experimental
``OnlineDPOTrainer``) take ``reward_funcs``: callables
``f(prompts=, completions=, completion_ids=, **kwargs) -> list[float | None]`` (the
kwargs carry the dataset's columns and ``trainer_state``). Checked against TRL 1.16.

* :func:`reward_function`: one reward per completion from the env's oracle with reward
  feedback (:meth:`~rlhf_env.instance.ProblemInstance.score`), **one charged query per
  completion**.
* :func:`pairwise_reward_function`: preference labels turned into the scores TRL expects.
  ``mode="pairs"`` (OnlineDPO: TRL passes 2B completions and keeps completion i against
  i + B, the chosen one by ``rewards[:B] >= rewards[B:]``): one charged pair query per
  prompt, returning 1/0. ``mode="group"`` (GRPO's groups of ``num_generations``
  consecutive completions of one prompt): every pair within a group is labelled (G(G-1)/2
  charged queries per group) and each completion scores its fraction of wins (a tie counts
  half), so the group's scores are a Copeland-style ranking by the oracle.
* :func:`to_trl_dataset`: a ``datasets.Dataset`` in TRL's prompt/chosen/rejected format
  from an env (its offline pairs), an agent's or a :class:`~agents.data.PreferenceData`'s
  pairs, or a run folder's ledger (every labelled query), with the labels' provenance
  (``source``: offline / queried; ``oracle``) as columns, and the env's own prompt in
  ``env_prompt`` — TRL hands the columns to reward functions, which read the prompt the
  env knows from it.

A call past the budget raises :class:`~rlhf_env.QueryBudgetExceeded` inside the trainer,
with the ledger's numbers; nothing of that call is charged. A completion count that does
not fit the mode, or a prompt the adapter cannot read, is refused before anything is paid.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.errors import DataError, InvalidArgumentError, MissingDependencyError
from rlhf_env.judging import instance_of  # the instance behind an env (no gold access)

__all__ = ["reward_function", "pairwise_reward_function", "to_trl_dataset", "require_trl",
           "OracleFunction"]

TRL_INSTALL = "pip install 'rlhf-env[trl]'"


def require_trl() -> Any:
    """Import TRL, or raise :class:`MissingDependencyError` naming the pip command."""
    if importlib.util.find_spec("trl") is None:
        raise MissingDependencyError(f"the TRL integration needs TRL: {TRL_INSTALL}")
    import trl

    return trl


def _text(x: Any, what: str) -> str:
    """A prompt or completion as text: a string, or the content of chat messages (the last
    message's for a completion; the dialogue's turns for a prompt)."""
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)) and x and all(isinstance(m, dict) and "content" in m
                                                  for m in x):
        if what == "completion":
            return str(x[-1]["content"])
        from rlhf_env.lm.chat import messages_to_text

        return messages_to_text(x)
    raise InvalidArgumentError(f"a {what} is a string or a list of chat messages, got "
                               f"{str(x)[:80]!r}")


class OracleFunction:
    """A TRL reward function over an env's oracle; see the module docstring.

    Attributes ``calls`` (oracle calls made) and ``queries`` (queries charged by this
    function) are kept for the record; the env's ledger holds the same counts.
    """

    def __init__(self, env: Any, kind: str, mode: str = "pairs", seed: int = 0,
                 name: str | None = None) -> None:
        self.instance = instance_of(env)
        if kind == "score" and self.instance.feedback != "reward":
            raise InvalidArgumentError(
                "reward_function scores completions with the env's reward feedback: make the "
                "env with feedback='reward' (or use pairwise_reward_function with preference "
                "feedback)")
        if kind == "pairs" and mode not in ("pairs", "group"):
            raise InvalidArgumentError(f"mode must be 'pairs' or 'group', got {mode!r}")
        self.kind, self.mode = kind, mode
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E1]))
        self.calls = self.queries = 0
        self.__name__ = name or ("rlhf_env_reward" if kind == "score" else "rlhf_env_preference")

    def _prompts(self, prompts: Sequence[Any], kwargs: dict[str, Any]) -> list[str]:
        given = kwargs.get("env_prompt")
        if given is not None:
            if len(given) != len(prompts):
                raise InvalidArgumentError(
                    f"env_prompt has {len(given)} entries for {len(prompts)} completions")
            return [str(p) for p in given]
        return [_text(p, "prompt") for p in prompts]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Any = None, **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise InvalidArgumentError(
                f"got {len(prompts)} prompts and {len(completions)} completions")
        ps = self._prompts(prompts, kwargs)
        cs = [_text(c, "completion") for c in completions]
        if self.kind == "score":
            scores = self.instance.score(ps, cs)
            self.calls, self.queries = self.calls + 1, self.queries + len(cs)
            return [float(s) for s in scores]
        if self.mode == "pairs":
            return self._pairs(ps, cs)
        g = kwargs.get("num_generations") or self.group_size
        return self._groups(ps, cs, int(g))

    group_size = 0
    """``mode="group"``: the group size G when TRL does not pass ``num_generations``."""

    def _pairs(self, ps: list[str], cs: list[str]) -> list[float]:
        n = len(cs)
        if n % 2 or n == 0:
            raise InvalidArgumentError(
                f"mode='pairs' labels completion i against i + B of 2B completions (TRL's "
                f"OnlineDPO); got {n}, not an even number")
        b = n // 2
        if ps[:b] != ps[b:]:
            raise InvalidArgumentError("mode='pairs': completions i and i + B must answer the "
                                       "same prompt (TRL's OnlineDPO layout)")
        labels = self.instance.label(ps[:b], cs[:b], cs[b:], self.rng)
        self.calls, self.queries = self.calls + 1, self.queries + b
        first = np.where(labels.tie, 0.5, labels.preference.astype(float))
        # TRL keeps i as chosen iff rewards[i] >= rewards[i + B]: a tie keeps the first
        return [float(v) for v in first] + [float(1 - v) if v != 0.5 else 0.5 for v in first]

    def _groups(self, ps: list[str], cs: list[str], g: int) -> list[float]:
        n = len(cs)
        if g < 2 or n % g:
            raise InvalidArgumentError(
                f"mode='group' scores groups of num_generations={g} consecutive completions "
                f"of one prompt (GRPO's layout); {n} completions do not split into them "
                "(set group_size, or pass num_generations)")
        a, b = [], []
        for start in range(0, n, g):
            if len(set(ps[start:start + g])) != 1:
                raise InvalidArgumentError(
                    f"mode='group': completions {start}..{start + g - 1} do not share a prompt")
            for i in range(start, start + g):
                for j in range(i + 1, start + g):
                    a.append(i)
                    b.append(j)
        labels = self.instance.label([ps[i] for i in a], [cs[i] for i in a], [cs[j] for j in b],
                                     self.rng)
        self.calls, self.queries = self.calls + 1, self.queries + len(a)
        wins = np.zeros(n)
        first = np.where(labels.tie, 0.5, labels.preference.astype(float))
        for i, j, w in zip(a, b, first):
            wins[i] += w
            wins[j] += 1 - w
        return [float(w / (g - 1)) for w in wins]


def reward_function(env: Any, *, name: str | None = None) -> OracleFunction:
    """A TRL ``reward_funcs`` entry scoring each completion through ``env``'s oracle (reward
    feedback; one charged query per completion)."""
    return OracleFunction(env, "score", name=name)


def pairwise_reward_function(env: Any, *, mode: str = "pairs", group_size: int = 0,
                             seed: int = 0, name: str | None = None) -> OracleFunction:
    """A TRL ``reward_funcs`` entry from ``env``'s preference oracle: ``mode="pairs"`` for
    OnlineDPO, ``mode="group"`` for GRPO (``group_size`` = its ``num_generations``); see the
    module docstring. The oracle's randomness comes from a generator seeded by ``seed``."""
    f = OracleFunction(env, "pairs", mode=mode, seed=seed, name=name)
    f.group_size = int(group_size)
    return f


def _rows_from_ledger(folder: Path) -> list[dict[str, Any]]:
    import sqlite3

    f = folder / "ledger.sqlite" if folder.is_dir() else folder
    if not f.is_file():
        raise DataError(f"no ledger at {f}: a run folder holds ledger.sqlite")
    db = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT q.prompt, q.response_1, q.response_2, q.answer, b.oracle FROM queries q "
            "JOIN batches b ON q.batch = b.id WHERE b.kind = 'label' ORDER BY b.id, q.i"
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise DataError(f"{f} is not a ledger this package wrote: {e}") from e
    finally:
        db.close()
    out = []
    for prompt, r1, r2, answer, oracle in rows:
        a = json.loads(answer)
        if a.get("tie"):
            continue  # no preference to learn from
        first = int(a["preference"]) == 1
        out.append({"prompt": prompt, "chosen": r1 if first else r2,
                    "rejected": r2 if first else r1, "source": "queried", "oracle": oracle})
    return out


def to_trl_dataset(source: Any, *, conversational: bool | None = None) -> Any:
    """A TRL preference dataset (``prompt``, ``chosen``, ``rejected``; plus ``source``,
    ``oracle`` and ``env_prompt``) from an env, an agent, a ``PreferenceData`` or a run
    folder (its ``ledger.sqlite``).

    ``conversational``: chat messages (prompt as the dialogue's messages, chosen/rejected
    as one assistant message each) instead of text; None: when the env's pi0 reads a chat
    template (a run folder or plain data: text).
    """
    import datasets

    rows: list[dict[str, Any]] = []
    template = False
    if isinstance(source, (str, Path)):
        rows = _rows_from_ledger(Path(source))
    elif hasattr(source, "prompts") and hasattr(source, "chosen"):  # PreferenceData
        rows = [{"prompt": p, "chosen": c, "rejected": r, "source": "agent", "oracle": ""}
                for p, c, r in zip(source.prompts, source.chosen, source.rejected)]
    elif hasattr(source, "data") and hasattr(source, "instance"):  # an agent
        inst = source.instance
        name = inst.oracle_config.get("name", "")
        offline = source.offline if source.uses_offline_data else None
        for data, where in ((offline, "offline"), (source.data, "queried")):
            if data is not None:
                rows += [{"prompt": p, "chosen": c, "rejected": r, "source": where,
                          "oracle": name} for p, c, r in zip(data.prompts, data.chosen,
                                                             data.rejected)]
        template = bool(getattr(getattr(inst.reference, "encoder", None), "use_template", False))
    else:
        inst = instance_of(source)
        ds = inst.offline_dataset
        if ds is None:
            raise InvalidArgumentError(f"{inst.name} has no offline data (setting='online')")
        name = inst.oracle_config.get("name", "")
        rows = [{"prompt": p, "chosen": c, "rejected": r, "source": "offline", "oracle": name}
                for p, c, r in zip(ds["prompt"], ds["chosen"], ds["rejected"])]
        template = bool(getattr(getattr(inst.reference, "encoder", None), "use_template", False))
    use_chat = template if conversational is None else bool(conversational)
    for row in rows:
        row["env_prompt"] = row["prompt"]
        if use_chat:
            from rlhf_env.lm.chat import as_messages

            row["prompt"] = as_messages(row["prompt"])
            row["chosen"] = [{"role": "assistant", "content": row["chosen"]}]
            row["rejected"] = [{"role": "assistant", "content": row["rejected"]}]
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in ("prompt", "chosen", "rejected",
                                                             "source", "oracle", "env_prompt")})
    return datasets.Dataset.from_list(rows)

