"""Any checkpoint on the harness: evaluate a model trained elsewhere as a zoo agent's policy.

``rlhf-zoo eval --model PATH --env ID [--seeds ...] [--name NAME] [--labels N]`` loads

* a Hugging Face causal-LM folder (TRL's output, a hub id) as a policy with **pi0's
  generation settings** (``max_new_tokens``, ``top_p``, context, prompt length, chat
  template), so that it is sampled as the env samples pi0;
* a LoRA adapter folder (peft's ``adapter_config.json``) onto the env's pi0;
* a policy folder this package saved (``policy.json``);

evaluates it with the env's evaluation (the options of the zoo's ``reference`` entry for
that env, or ``--eval-kwargs``) for each seed, and writes
``RUNS/<env>/external/<name>/seed<S>/eval.json`` marked ``external``, with the label count
it was given (``--labels``; the checkpoint's training is not the zoo's to count).
``rlhf-zoo leaderboard --include-external`` lists those folders as rows, paired by seed
like the zoo's own.

**One instance per policy on an exact env.** Each seed of an exact env is another
instance (new features, hidden reward and pi0), so a policy trained on one means nothing on
another, and averaging seeds would mix a score with noise. A saved policy inside a zoo run
folder (``<run>/policy``, ``<run>/checkpoint/...``) is evaluated only on the instance that
run's ``config.yml`` records (env id, env kwargs and seed: :func:`trained_run`); the
instance is compared by what exact evaluation reads (:func:`evaluated_instance`), so another
seed or another ``--env-kwargs`` is refused with the run's own seed and kwargs in the
message. A policy folder with no such record is evaluated on one seed at most. Sampled
(language) envs keep several seeds: there a seed draws the prompts (and data), over the same
pi0 and gold reward.

The KL to pi0 is only defined over pi0's tokenizer: a checkpoint whose vocabulary differs is
refused unless ``allow_tokenizer_mismatch`` (then its KL is scored on the text, with a
warning). An adapter made for another base is refused by the adapter's own checks.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from agents.files import read_json, read_yaml, write_json
from rlhf_env.errors import DataError, InvalidArgumentError

__all__ = ["EXTERNAL", "load_external_policy", "evaluate_external", "external_results",
           "trained_run", "evaluated_instance"]

EXTERNAL = "external"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def load_external_policy(model: str | Path, reference: Any, *,
                         allow_tokenizer_mismatch: bool = False) -> Any:
    """``model`` as a policy of the env whose pi0 is ``reference`` (see the module docstring)."""
    from rlhf_env.policies import CausalLMPolicy, load_policy

    path = Path(model)
    if (path / "policy.json").is_file():
        return load_policy(path, base=reference)
    if (path / ".rlhf-run").is_file() and (path / "policy").is_dir():
        raise InvalidArgumentError(
            f"{model} is a zoo run folder: give its policy (--model {path / 'policy'}), or "
            f"re-evaluate the run itself with rlhf-zoo eval {model}")
    if not isinstance(reference, CausalLMPolicy):
        raise InvalidArgumentError(
            f"an external language model needs a language env; this env's pi0 is a "
            f"{type(reference).__name__}")
    if (path / "adapter_config.json").is_file():
        return reference.with_adapter(path)
    cfg = reference.config()
    cfg.pop("gradient_checkpointing", None)
    policy = CausalLMPolicy(str(model), device=reference.device, **cfg)
    if policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        if not allow_tokenizer_mismatch:
            raise InvalidArgumentError(
                f"{model} has another tokenizer than the env's pi0 "
                f"({len(policy.tokenizer)} vs {len(reference.tokenizer)} tokens): its KL to "
                "pi0 is undefined token by token. Pass --allow-tokenizer-mismatch to score it "
                "on the text (log_prob of the decoded responses) anyway")
        warnings.warn(f"{model}: tokenizer differs from pi0's; its KL is scored on the text",
                      stacklevel=2)
    return policy.freeze()


def trained_run(model: str | Path) -> tuple[Path, Any] | None:
    """The zoo run a saved policy folder belongs to: ``(run folder, its RunConfig)`` for the
    nearest folder at or above ``model`` holding the run marker and ``config.yml`` (whose
    digest is checked), or None when there is no such record."""
    from agents.zoo.config import RunConfig
    from agents.zoo.run import MARKER, check_record

    path = Path(model).resolve()
    for folder in (path, *path.parents):
        if (folder / MARKER).is_file() and (folder / "config.yml").is_file():
            check_record(folder, "config.yml")
            return folder, RunConfig.from_dict(read_yaml(folder / "config.yml"))
    return None


def evaluated_instance(env: Any) -> str:
    """A digest of what exact evaluation reads of ``env``'s instance: the eval prompts, the
    candidates, eta and pi0's table, and the hidden reward as the harness sees it, through
    pi0's own exact evaluation (its gold reward, J(pi*), the best-of-n points). Envs that
    differ only in their offline data, setting or oracle share it; another seed or another
    shape, scale or alignment of the reward does not."""
    import hashlib

    import numpy as np

    import rlhf_env

    inst = env.unwrapped.instance
    h = hashlib.sha256(repr((inst.eta, inst.eval_prompts, inst.catalog.prompts,
                             inst.catalog.responses)).encode())
    h.update(np.ascontiguousarray(inst.reference.log_probs_table().detach().double().cpu()
                                  .numpy()).tobytes())
    h.update(json.dumps(rlhf_env.evaluate(inst.reference, env), sort_keys=True).encode())
    return h.hexdigest()


def _kwargs(kw: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(kw.items()) if k != "seed") or "none"


def _check_instances(model: str | Path, env_id: str, envs: dict[int, tuple[Any, Any]]) -> None:
    """Refuse to score a policy of an exact env on an instance it was not trained on (the
    module docstring); ``envs`` maps each seed asked for to its (RunConfig, env)."""
    import rlhf_env
    from agents.zoo.run import make_env

    found = trained_run(model)
    if found is None:
        if len(envs) > 1:
            raise InvalidArgumentError(
                f"{model} has no record of the instance it was trained on (no zoo run folder, "
                f"with .rlhf-run and config.yml, at or above it), and each seed of the exact "
                f"env {env_id} is another instance (new features, hidden reward and pi0): a "
                f"policy scores on the one it was trained on and means nothing on the others, "
                f"so {len(envs)} seeds would average a score with noise. Give the one seed it "
                f"was trained on (--seeds S-S)")
        return
    run, trained = found
    if rlhf_env.spec(trained.env_id).kind not in ("exact", "linear"):
        raise InvalidArgumentError(
            f"{model} was trained on {trained.env_id}, a sampled env ({run / 'config.yml'}): "
            f"it is no policy of the exact env {env_id}")
    own = f"--seeds {trained.seed}-{trained.seed}"
    where = (f"{model} was trained on {trained.env_id} seed {trained.seed} (env kwargs: "
             f"{_kwargs(trained.make_env_kwargs())}; recorded in {run / 'config.yml'})")
    for seed in envs:
        if seed != trained.seed:
            raise InvalidArgumentError(
                f"{where}. Each seed of an exact env is another instance (new features, hidden "
                f"reward and pi0), so seed {seed} would score it on a problem it never saw. "
                f"Evaluate it on seed {trained.seed} alone: {own}")
    want = evaluated_instance(make_env(trained))
    for seed, (cfg, env) in envs.items():
        if evaluated_instance(env) != want:
            raise InvalidArgumentError(
                f"{where}; {env_id} seed {seed} made with env kwargs "
                f"{_kwargs(cfg.make_env_kwargs())} is another instance (other features, hidden "
                f"reward or pi0). Evaluate it with the env and --env-kwargs of that run")


def _folder(runs: str | Path, env_id: str, name: str, seed: int, oracle: str | None) -> Path:
    top = env_id if oracle in (None, "bt") else f"{env_id}+{oracle}"
    return Path(runs) / top / EXTERNAL / name / f"seed{seed}"


def evaluate_external(model: str | Path, env_id: str, seeds: list[int] | None = None, *,
                      runs: str | Path = "runs", name: str | None = None,
                      env_kwargs: dict[str, Any] | None = None, oracle: str | None = None,
                      eval_options: dict[str, Any] | None = None, labels: int = 0,
                      allow_tokenizer_mismatch: bool = False) -> list[dict[str, Any]]:
    """Evaluate ``model`` on ``env_id`` for each seed into external run folders; returns
    the eval records. ``seeds=None``: the seed its zoo run records on an exact env, else 0."""
    import rlhf_env
    from agents.zoo.config import resolve
    from agents.zoo.run import check_eval_options, evaluate_policy, make_env, record

    name = name or Path(str(model).rstrip("/")).name
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"--name {name!r}: letters, digits, '_', '.', '-' (up to 64), starting with a "
            "letter or digit")
    if isinstance(labels, bool) or not isinstance(labels, int) or labels < 0:
        raise InvalidArgumentError(f"--labels must be an int >= 0, got {labels!r}")
    check_eval_options(env_id, eval_options or {})

    def made(seed: int) -> tuple[Any, Any]:
        cfg = resolve("reference", env_id, seed, env_kwargs=env_kwargs, oracle=oracle)
        cfg.eval = {**cfg.eval, **(eval_options or {})}
        return cfg, make_env(cfg)

    exact_env = rlhf_env.spec(env_id).kind in ("exact", "linear")
    if seeds is None:
        found = trained_run(model) if exact_env else None
        seeds = [found[1].seed if found is not None else 0]
    exact: dict[int, tuple[Any, Any]] = {}
    if exact_env:  # cheap to make: every seed checked before one is evaluated
        exact = {seed: made(seed) for seed in seeds}
        _check_instances(model, env_id, exact)
    out = []
    for seed in seeds:
        cfg, env = exact[seed] if seed in exact else made(seed)
        policy = load_external_policy(model, env.unwrapped.reference,
                                      allow_tokenizer_mismatch=allow_tokenizer_mismatch)
        result = dict(evaluate_policy(policy, env, cfg))
        result.update({"env_id": env_id, "agent": f"{EXTERNAL}:{name}", "seed": seed,
                       "oracle": oracle or "bt", "external": True, "model": str(model),
                       "labels": labels, "offline_labels": 0, "queries_used": 0})
        folder = _folder(runs, env_id, name, seed, oracle)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "eval.json", result)
        record(folder, "eval.json")
        (folder / "source.json").write_text(json.dumps(
            {"model": str(model), "env_kwargs": cfg.make_env_kwargs(), "eval": cfg.eval},
            indent=1, default=str))
        out.append(result)
    return out


def external_results(runs: str | Path, env_id: str, seeds: list[int],
                     oracle: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The external rows of ``env_id`` under ``runs`` for ``seeds``: ``{"external:<name>":
    [eval records]}``; a record that is not a finite, complete evaluation is an error."""
    import math

    root = _folder(runs, env_id, "x", 0, oracle).parent.parent
    out: dict[str, list[dict[str, Any]]] = {}
    if not root.is_dir():
        return out
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        rows = []
        for seed in seeds:
            f = model_dir / f"seed{seed}" / "eval.json"
            if not f.is_file():
                continue
            from agents.zoo.run import check_record

            check_record(f.parent, "eval.json")
            r = read_json(f)
            bad = [k for k in ("objective", "gold_reward", "kl")
                   if not isinstance(r.get(k), (int, float)) or not math.isfinite(r[k])]
            if bad or r.get("seed") != seed or not r.get("external"):
                raise DataError(f"{f} is not a complete external evaluation (bad or missing "
                                f"{bad or ['seed/external']}): evaluate the model again")
            rows.append(r)
        if rows:
            out[f"{EXTERNAL}:{model_dir.name}"] = rows
    return out
