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
with the ledger's numbers; nothing of that call is charged. A call is checked whole before
anything is paid: a completion count that does not fit the mode, a prompt that is not one of
the env's train prompts (a conversational prompt of one user turn is read as its content),
a completion that is not a response of the env, or a generator instead of a list is refused
with :class:`~rlhf_env.errors.InvalidArgumentError`, naming the item; so are a ``seed`` or
``group_size`` that is not an int (a bool included) at construction.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.errors import (
    DataError,
    InvalidActionError,
    InvalidArgumentError,
    MissingDependencyError,
)
from rlhf_env.instance import as_column, check_positive_int, short
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


def _text(x: Any, what: str, where: str = "") -> str:
    """A prompt or completion as text: a string, or the content of chat messages (the last
    message's for a completion; the dialogue's turns for a prompt). ``where`` names the item
    (``completions[3]``) in the error."""
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)) and x and all(isinstance(m, dict) and "content" in m
                                                  for m in x):
        if what == "completion":
            return str(x[-1]["content"])
        from rlhf_env.lm.chat import messages_to_text

        return messages_to_text(x)
    raise InvalidArgumentError(f"{where or 'a ' + what} must be a string or a list of chat "
                               f"messages, got {type(x).__name__} {short(x)}")


class OracleFunction:
    """A TRL reward function over an env's oracle; see the module docstring.

    Every call is checked whole before anything is charged (each prompt one of the env's
    train prompts, each completion a response of the env, the layout of ``mode``), then
    charged once, in one oracle call. Attributes ``calls`` (oracle calls made) and
    ``queries`` (queries charged by this function) are kept for the record; the env's
    ledger holds the same counts.

    Args:
        env: an env made by :func:`rlhf_env.make`.
        kind: ``"score"`` (reward feedback) or ``"pairs"`` (preference feedback).
        mode: ``kind="pairs"``: ``"pairs"`` (OnlineDPO) or ``"group"`` (GRPO).
        seed: an int >= 0; seeds the generator the oracle draws its labels from.
        name: the function's ``__name__`` (TRL logs rewards under it), or None.
        group_size: ``mode="group"``: the group size G (an int >= 2) when TRL does not pass
            ``num_generations``; 0 to require it from TRL.
    """

    def __init__(self, env: Any, kind: str, mode: str = "pairs", seed: int = 0,
                 name: str | None = None, group_size: int = 0) -> None:
        if kind not in ("score", "pairs"):
            raise InvalidArgumentError(f"kind must be 'score' or 'pairs', got {short(kind)}")
        if kind == "pairs" and mode not in ("pairs", "group"):
            raise InvalidArgumentError(f"mode must be 'pairs' or 'group', got {short(mode)}")
        seed = check_positive_int("seed", seed, minimum=0)
        group_size = check_positive_int("group_size", group_size, minimum=0)
        if group_size == 1:
            raise InvalidArgumentError(
                "group_size must be 0 (take TRL's num_generations) or an int >= 2 (a group "
                "of one completion has no pair to label), got 1")
        if name is not None and not isinstance(name, str):
            raise InvalidArgumentError(f"name must be a str or None, got {short(name)}")
        self.instance = instance_of(env)
        if kind == "score" and self.instance.feedback != "reward":
            raise InvalidArgumentError(
                "reward_function scores completions with the env's reward feedback: make the "
                "env with feedback='reward' (or use pairwise_reward_function with preference "
                "feedback)")
        self.kind, self.mode, self.group_size = kind, mode, group_size
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E1]))
        self.calls = self.queries = 0
        self.__name__ = name or ("rlhf_env_reward" if kind == "score" else "rlhf_env_preference")

    # -- checks: the whole call, before anything is charged ------------------------------------
    def _prompt(self, x: Any, i: int) -> str:
        text = _text(x, "prompt", f"prompts[{i}]")
        if (not isinstance(x, str) and self.instance.train_prompt_index(text) is None
                and len(x) == 1 and x[0].get("role") == "user"
                and isinstance(x[0]["content"], str)):  # one user turn: as_messages(prompt)
            return x[0]["content"]
        return text

    def _prompts(self, prompts: list[Any], kwargs: dict[str, Any]) -> list[str]:
        given = kwargs.get("env_prompt")
        if given is None:
            return [self._prompt(p, i) for i, p in enumerate(prompts)]
        given = as_column(given, "env_prompt")
        if len(given) != len(prompts):
            raise InvalidArgumentError(
                f"env_prompt has {len(given)} entries for {len(prompts)} completions")
        for i, p in enumerate(given):
            if not isinstance(p, str):
                raise InvalidArgumentError(
                    f"env_prompt[{i}] must be a str (one of the env's train prompts), got "
                    f"{type(p).__name__} {short(p)}")
        return given

    def _check_known(self, ps: list[str], cs: list[str]) -> None:
        inst = self.instance
        for i, p in enumerate(ps):
            if inst.train_prompt_index(p) is None:
                raise InvalidArgumentError(
                    f"prompts[{i}] {short(p)} is not one of the env's {len(inst.train_prompts)} "
                    "train prompts (env.unwrapped.train_prompts), which are all the oracle "
                    "labels; if the dataset's prompt column is formatted, give the env's own "
                    "prompt in an 'env_prompt' column (to_trl_dataset adds it)")
        for i, c in enumerate(cs):
            try:
                inst.check_responses([c])
            except InvalidActionError as e:
                raise InvalidArgumentError(f"completions[{i}]: {e}") from e

    def _group_size(self, kwargs: dict[str, Any]) -> int:
        given = kwargs.get("num_generations")
        if given is None:
            return self.group_size
        return check_positive_int("num_generations", given, minimum=0) or self.group_size

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Any = None, **kwargs: Any) -> list[float]:
        prompts = as_column(prompts, "prompts")
        completions = as_column(completions, "completions")
        if len(prompts) != len(completions):
            raise InvalidArgumentError(
                f"got {len(prompts)} prompts and {len(completions)} completions")
        ps = self._prompts(prompts, kwargs)
        cs = [_text(c, "completion", f"completions[{i}]") for i, c in enumerate(completions)]
        if self.kind == "score":
            self._check_known(ps, cs)
            scores = self.instance.score(ps, cs)
            self.calls, self.queries = self.calls + 1, self.queries + len(cs)
            return [float(s) for s in scores]
        if self.mode == "pairs":
            return self._pairs(ps, cs)
        return self._groups(ps, cs, self._group_size(kwargs))

    # -- the charged calls ---------------------------------------------------------------------
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
        self._check_known(ps, cs)
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
        self._check_known(ps, cs)
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
    OnlineDPO, ``mode="group"`` for GRPO (``group_size`` = its ``num_generations``, an int
    >= 2, or 0 to take TRL's); see the module docstring. The oracle's randomness comes from
    a generator seeded by ``seed`` (an int >= 0). Bad arguments raise
    :class:`~rlhf_env.errors.InvalidArgumentError` before anything is built."""
    return OracleFunction(env, "pairs", mode=mode, seed=seed, name=name, group_size=group_size)


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

