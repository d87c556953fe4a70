"""The problem instance: everything an agent may know about the task, and the metered oracle.

``rlhf_env.make`` builds one :class:`ProblemInstance` per call: the train
prompts (d0 for learning) and held-out evaluation prompts, the reference
policy pi0, the KL coefficient eta, the setting (offline / online / hybrid),
the feedback type, the offline dataset, the query ledger and the seed.
:class:`~rlhf_env.core.RLHFEnv` and :class:`~rlhf_env.core.RLHFVectorEnv` are
Gymnasium views over it; every view of one instance shares its ledger.

An instance declares its **kind**, which evaluation, agents and the zoo
dispatch on:

* ``"exact"``: a finite catalog of candidate responses per prompt; policies are
  ``(N, K)`` tables and :func:`rlhf_env.evaluate` is exact;
* ``"linear"``: exact, and the features phi(x, a) of the linear reward class are
  public (the linear bandit of Xiong et al. 2024);
* ``"sampled"``: responses are sampled text (language models); evaluation is
  Monte Carlo.

The oracle is reachable only through :meth:`ProblemInstance.label` and
:meth:`ProblemInstance.score`, which check the responses and charge the ledger.
The gold reward, hidden parameters and the optimum are not here: they are the
judge's (:func:`rlhf_env.judge`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import InvalidActionError, InvalidArgumentError
from rlhf_env.oracles import Labels, Oracle, OracleContext, QueryLedger, make_oracle
from rlhf_env.policies import Catalog, Policy

__all__ = ["KINDS", "SETTINGS", "FEEDBACK", "CommonArgs", "ProblemInstance", "check_seed",
           "check_positive_int", "check_positive_float", "short", "as_column", "checked_labels",
           "checked_scores"]

KINDS = ("exact", "linear", "sampled")
SETTINGS = ("offline", "online", "hybrid")
FEEDBACK = ("preference", "reward")


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long it was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def as_column(value: Any, name: str) -> list[Any]:
    """``value`` as a list, if it is a sequence (a list, a tuple, a 1-d array) and not text.

    A generator or other one-shot iterable is refused: the adapters check every item of a
    call before they charge anything, and a caller could not see which items were consumed."""
    from collections.abc import Sequence

    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidArgumentError(
            f"{name} must be a sequence (a list or tuple), got {type(value).__name__} "
            f"{short(value)}")
    return list(value)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """Return ``seed`` as an int (or None); raise :class:`InvalidArgumentError` otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int or None, got {short(seed)}")
    return int(seed)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or :class:`InvalidArgumentError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {short(value)}")
    return int(value)


def check_positive_float(name: str, value: Any, allow_zero: bool = False,
                         low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite float > 0 (or >= 0), within ``[low, high]`` when given (where
    the maths stays in float64's range), or :class:`InvalidArgumentError`."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not (value >= 0 if allow_zero else value > 0):
        raise InvalidArgumentError(
            f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, "
            f"got {short(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgumentError(
            f"{name} must be in [{low if low is not None else 0}, {high}] (beyond it exp() of "
            f"the rewards or logits leaves float64's range), got {short(value)}")
    return float(value)


ETA_RANGE = (1e-4, 1e4)
"""The KL coefficients an env accepts."""
NORM_LIMIT = 100.0
"""The largest parameter norm (theta*, pi0's w0) the linear envs accept."""


def checked_labels(labels: Any, responses_1: Sequence[str], responses_2: Sequence[str],
                   oracle: str) -> Labels:
    """An oracle's answers to n pairs, checked before anything is charged or recorded: a
    :class:`Labels` of n answers, each preference 0 or 1 (a tie 1 with ``tie`` set), chosen
    and rejected the pair's two responses in the order the preference says."""
    from rlhf_env.errors import DataError

    n = len(responses_1)
    if not isinstance(labels, Labels):
        raise DataError(f"oracle {oracle!r} returned a {type(labels).__name__}, not Labels")
    lens = {k: len(getattr(labels, k)) for k in ("preference", "chosen", "rejected", "tie")}
    lens.update({f"info[{k!r}]": len(v) for k, v in labels.info.items()})
    if set(lens.values()) != {n}:
        raise DataError(f"oracle {oracle!r} answered {lens} for {n} pairs: every field must "
                        f"have one entry per pair (nothing was charged)")
    pref = np.asarray(labels.preference)
    if not np.isin(pref, (0, 1)).all():
        raise DataError(f"oracle {oracle!r} returned preferences {sorted(set(pref.tolist()))}; "
                        "a preference is 1 (the first preferred, or a tie) or 0")
    if np.asarray(labels.tie).dtype != bool:
        raise DataError(f"oracle {oracle!r}: tie must be booleans")
    for i, (a, b) in enumerate(zip(responses_1, responses_2)):
        want = (a, b) if pref[i] == 1 else (b, a)
        if (labels.chosen[i], labels.rejected[i]) != want:
            raise DataError(f"oracle {oracle!r}, pair {i}: chosen/rejected are not the pair's "
                            "responses in the order its preference gives")
    return labels


def checked_scores(scores: Any, n: int, oracle: str) -> np.ndarray:
    """An oracle's rewards of n responses, checked: n finite floats."""
    from rlhf_env.errors import DataError

    try:
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"oracle {oracle!r} returned rewards that are not numbers: {e}") from e
    if len(values) != n or not np.isfinite(values).all():
        raise DataError(f"oracle {oracle!r} returned {len(values)} rewards for {n} responses"
                        f"{'' if np.isfinite(values).all() else ', some not finite'} (nothing "
                        "was charged)")
    return values


@dataclasses.dataclass(frozen=True)
class CommonArgs:
    """The arguments every env takes, checked once (:meth:`check`).

    Attributes:
        setting: ``"offline"``, ``"online"`` or ``"hybrid"``.
        query_budget: queries the oracle answers (0 offline).
        eta: the KL coefficient of the objective.
        seed: the instance seed (None: 0 for the instance, entropy for episodes).
        feedback: ``"preference"`` (pairs) or ``"reward"`` (one response).
        oracle: the training oracle, not yet bound to the env's gold reward.
        ledger: the ledger to charge (None: a fresh in-memory one).
    """

    setting: str
    query_budget: int
    eta: float
    seed: int | None
    feedback: str
    oracle: Oracle
    ledger: QueryLedger

    @classmethod
    def check(cls, *, setting: Any, query_budget: Any, eta: Any, seed: Any, feedback: Any,
              oracle: Any, ledger: Any = None, default_budget: int) -> CommonArgs:
        """Validate the common arguments; ``default_budget`` is the env's default budget.

        Offline has a budget of 0; an explicit budget > 0 with ``setting="offline"`` is an
        error, as is a ledger whose budget differs from ``query_budget``.
        """
        if setting not in SETTINGS:
            raise InvalidArgumentError(f"setting must be one of {SETTINGS}, got {short(setting)}")
        if query_budget is not None:
            query_budget = check_positive_int("query_budget", query_budget, 0)
        if setting == "offline":
            if query_budget:
                raise InvalidArgumentError(
                    f"setting='offline' has no oracle queries, but query_budget={query_budget} "
                    "was given; use setting='hybrid' for offline data plus queries")
            budget = 0
        else:
            budget = default_budget if query_budget is None else query_budget
        if feedback not in FEEDBACK:
            raise InvalidArgumentError(f"feedback must be one of {FEEDBACK}, got {short(feedback)}")
        if ledger is not None and not isinstance(ledger, QueryLedger):
            raise InvalidArgumentError(
                f"ledger must be a rlhf_env.oracles.QueryLedger, got {type(ledger).__name__}")
        if ledger is None or not ledger.sealed:  # before anything is built or bound to r*
            from rlhf_env.judging import refuse_during_a_run

            refuse_during_a_run("a new environment")
        if ledger is None:
            ledger = QueryLedger(budget)
        else:
            ledger.bind_budget(budget)
        eta = check_positive_float("eta", eta, low=ETA_RANGE[0], high=ETA_RANGE[1])
        made = make_oracle(oracle)
        if feedback == "reward" and type(made).score is Oracle.score:
            raise InvalidArgumentError(
                f"feedback='reward' asks the oracle for rewards, and the oracle "
                f"{made.name!r} answers preference queries only (its noise — flips, "
                "annotators, biases — is defined on pairs, and would be dropped): use "
                "feedback='preference', or oracle='bt' for the gold reward itself")
        return cls(setting, budget, eta, check_seed(seed), feedback, made, ledger)

    def bind_oracle(self, context: OracleContext) -> Oracle:
        """The training oracle bound to the env's gold reward (see :meth:`Oracle.bind`)."""
        return self.oracle.bind(context)

    def instance_rng(self, tag: int) -> np.random.Generator:
        """The generator an env family builds its instance from (seed None counts as 0)."""
        return np.random.default_rng(np.random.SeedSequence([self.seed or 0, tag]))


class ProblemInstance:
    """One problem: what agents may know, and the only, metered, way to ask the oracle.

    Args:
        kind: ``"exact"``, ``"linear"`` or ``"sampled"`` (module docstring).
        common: the checked common arguments (:class:`CommonArgs`).
        oracle: the training oracle, bound to the env's gold reward.
        train_prompts: the prompts episodes draw from (uniformly).
        eval_prompts: held-out prompts, for :func:`rlhf_env.evaluate`.
        reference: pi0 (frozen here).
        offline_dataset: a ``datasets.Dataset`` with prompt/chosen/rejected columns, or None.
        response_space: the Gymnasium space of one response.
        max_prompt_length: the observation space's longest prompt, in characters.
        catalog: the prompts and candidates (exact and linear kinds).
        features: phi, ``(N, K, d)`` (linear kind).
        name: the env id or family, for messages.
    """

    def __init__(self, *, kind: str, common: CommonArgs, oracle: Oracle,
                 train_prompts: Sequence[str], eval_prompts: Sequence[str], reference: Policy,
                 offline_dataset: Any, response_space: Any, max_prompt_length: int,
                 catalog: Catalog | None = None, features: np.ndarray | None = None,
                 name: str = "env") -> None:
        if kind not in KINDS:
            raise InvalidArgumentError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind != "sampled" and catalog is None:
            raise InvalidArgumentError(f"an instance of kind {kind!r} needs a catalog")
        if kind == "linear" and features is None:
            raise InvalidArgumentError("an instance of kind 'linear' needs features")
        if not train_prompts or not eval_prompts:
            raise InvalidArgumentError(f"{name}: train and eval prompts must both be non-empty")
        self._kind = kind
        self._common = common
        self._oracle = oracle
        self._ledger = common.ledger
        self._train_prompts = tuple(train_prompts)
        self._eval_prompts = tuple(eval_prompts)
        self._reference = reference.freeze()
        self._offline_dataset = offline_dataset
        self._catalog = catalog
        self._features = None if features is None else np.asarray(features, dtype=np.float64)
        if self._features is not None:
            self._features.setflags(write=False)
        self.response_space = response_space
        self.max_prompt_length = int(max_prompt_length)
        self.name = name

    # -- what agents may know ------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"exact"``, ``"linear"`` or ``"sampled"``."""
        return self._kind

    @property
    def exact(self) -> bool:
        """Whether the responses are a finite catalog and evaluation is exact."""
        return self._kind in ("exact", "linear")

    @property
    def reference(self) -> Policy:
        """The reference policy pi0 (frozen)."""
        return self._reference

    @property
    def eta(self) -> float:
        """The KL coefficient eta of the objective (DPO's beta when the oracle is BT at
        temperature 1)."""
        return self._common.eta

    @property
    def seed(self) -> int | None:
        """The instance seed (it also seeds the first unseeded reset)."""
        return self._common.seed

    @property
    def setting(self) -> str:
        return self._common.setting

    @property
    def feedback(self) -> str:
        return self._common.feedback

    @property
    def offline_dataset(self) -> Any:
        """A ``datasets.Dataset`` with columns prompt/chosen/rejected, or None (online)."""
        return self._offline_dataset

    @property
    def train_prompts(self) -> tuple[str, ...]:
        """The prompts episodes are drawn from (uniformly)."""
        return self._train_prompts

    def fingerprint(self) -> str:
        """A digest of the instance's public parts (kind, eta, setting, feedback, budget,
        prompts, pi0's table on exact envs, the features on linear ones): two instances
        with another seed or catalogue differ. Checkpoints record it (cached)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        import hashlib

        h = hashlib.sha256(repr((self.name, self._kind, self.eta, self.setting, self.feedback,
                                 self.query_budget)).encode())
        for p in (*self._train_prompts, "\x00", *self._eval_prompts):
            h.update(p.encode("utf-8", "surrogatepass") + b"\x00")
        if self._catalog is not None:
            h.update(np.ascontiguousarray(self._reference.log_probs_table().detach().double()
                                          .cpu().numpy()).tobytes())
        if self._features is not None:
            h.update(np.ascontiguousarray(self._features, dtype=np.float64).tobytes())
        digest = h.hexdigest()[:16]
        self.__dict__["_fingerprint"] = digest
        return digest

    def train_prompt_index(self, prompt: Any) -> int | None:
        """The index of ``prompt`` among the train prompts, or None."""
        if not isinstance(prompt, str):
            return None
        if self.__dict__.get("_train_index") is None:
            self.__dict__["_train_index"] = {p: i for i, p in reversed(list(enumerate(
                self._train_prompts)))}
        return self.__dict__["_train_index"].get(prompt)

    @property
    def eval_prompts(self) -> tuple[str, ...]:
        """Held-out prompts, for the evaluation harness."""
        return self._eval_prompts

    @property
    def catalog(self) -> Catalog:
        """The prompts and candidate responses (exact and linear kinds)."""
        if self._catalog is None:
            raise AttributeError(f"{self.name} is a sampled env: it has no catalog of responses")
        return self._catalog

    @property
    def features(self) -> np.ndarray:
        """phi(x, a), ``(N, K, d)``, read-only (linear kind: the features are known)."""
        if self._features is None:
            raise AttributeError(f"{self.name} is not a linear env: it publishes no features")
        return self._features

    @property
    def ledger(self) -> QueryLedger:
        """The query ledger shared by every view of this instance (read-only counters)."""
        return self._ledger

    @property
    def query_budget(self) -> int:
        return self._ledger.budget

    @property
    def queries_used(self) -> int:
        return self._ledger.used

    @property
    def queries_left(self) -> int:
        return self._ledger.left

    @property
    def oracle_config(self) -> dict[str, Any]:
        """The training oracle's name and parameters (public: part of the run's config)."""
        return self._oracle.config()

    # -- the metered oracle --------------------------------------------------------------------
    def check_responses(self, responses: Sequence[Any]) -> None:
        """Raise :class:`InvalidActionError` unless every response is valid for this env."""
        for r in responses:
            if not isinstance(r, str):
                raise InvalidActionError(
                    f"a response must be a str, got {type(r).__name__} {short(r)}")
            try:
                r.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate: no record could hold it
                raise InvalidActionError(
                    f"response {short(r)} is not valid Unicode text ({e.reason} at character "
                    f"{e.start}): a response must encode as UTF-8") from e
            if self._catalog is not None:
                self._catalog.response_ids([r])  # raises, naming the candidates
            elif not self.response_space.contains(r):
                raise InvalidActionError(
                    f"response {short(r)} is not in the response space {self.response_space} "
                    f"({len(r)} characters)")

    def label(self, prompts: Sequence[str], responses_1: Sequence[str],
              responses_2: Sequence[str], rng: np.random.Generator) -> Labels:
        """Check the pairs, charge ``len(prompts)`` queries and ask the oracle (one call)."""
        self.check_responses(responses_1)
        self.check_responses(responses_2)

        def ask() -> Labels:
            return checked_labels(self._oracle.label(prompts, responses_1, responses_2, rng),
                                  responses_1, responses_2, self._oracle.name)

        return self._ledger.settle("label", prompts, (responses_1, responses_2), ask, rng,
                                   self._oracle.name)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Check the responses, charge ``len(prompts)`` queries and ask for their rewards."""
        self.check_responses(responses)

        def ask() -> np.ndarray:
            return checked_scores(self._oracle.score(prompts, responses), len(prompts),
                                  self._oracle.name)

        return self._ledger.settle("score", prompts, (responses,), ask, None, self._oracle.name)

    # -- episodes --------------------------------------------------------------------------------
    @staticmethod
    def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
        """The prompt stream and the oracle stream of an episode seed."""
        prompt_ss, oracle_ss = np.random.SeedSequence([seed, 0x5EED]).spawn(2)
        return np.random.Generator(np.random.PCG64(prompt_ss)), np.random.default_rng(oracle_ss)

    def draw_prompt_ids(self, rng: np.random.Generator, n: int | None = None) -> Any:
        """Train prompt indices drawn uniformly as floor(u * N) from doubles, so single
        and vector views consume the prompt stream identically; an int if ``n`` is None."""
        count = len(self._train_prompts)
        if n is None:
            return int(rng.random() * count)
        return (rng.random(n) * count).astype(np.int64)

    # -- copies ----------------------------------------------------------------------------------
    def __deepcopy__(self, memo: dict) -> ProblemInstance:
        return self  # a copied env is another view of the same instance: one ledger

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError(
            f"a problem instance ({self.name}) cannot be pickled: a copy in another process "
            "would hold its own query budget. Make the env in that process with "
            "rlhf_env.make, or vectorise with rlhf_env.make_vec.")

    def __repr__(self) -> str:
        return (f"ProblemInstance({self.name}, kind={self._kind}, setting={self.setting}, "
                f"eta={self.eta}, queries {self.queries_used}/{self.query_budget})")
