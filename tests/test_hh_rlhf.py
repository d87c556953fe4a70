import gzip
import json

import pytest

import rlhf_env
from rlhf_env.data.hh_rlhf import load_hh_rlhf, parse_pair
from rlhf_env.errors import DataError


def test_parse_pair_hand_cases():
    h = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:"
    assert parse_pair(h + " see you", h + " no") == (h, " see you", " no")
    assert parse_pair(h + "  ", h + " no") == "empty_chosen"
    assert parse_pair(h + " a", h.replace("bye", "ciao") + " b") == "history_mismatch"
    assert parse_pair("\n\nHuman: only", "\n\nHuman: only") == "no_assistant_turn"


def test_parse_counts_on_the_real_slice(hh_dir):
    ds, report = load_hh_rlhf(subset="harmless-base", split="test", data_dir=hh_dir)
    assert report["rows"] == 1800
    assert report["dropped"]["empty_chosen"] == 4
    assert report["dropped"]["history_mismatch"] == 2
    assert report["kept"] == len(ds) == 1794
    assert all(p.endswith("\n\nAssistant:") for p in ds["prompt"])
    assert all(c.strip() and r.strip() for c, r in zip(ds["chosen"], ds["rejected"]))


def test_strict_names_file_and_line(hh_dir):
    with pytest.raises(DataError, match=r"test\.jsonl\.gz:\d+: dropped"):
        load_hh_rlhf(subset="harmless-base", split="test", data_dir=hh_dir, strict=True)


def test_malformed_lines_counted_or_raised(tmp_path):
    good = {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}
    path = tmp_path / "test.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write((json.dumps(good) + "\n").encode())
        f.write(b"{not json\n")
        f.write((json.dumps({"chosen": "x"}) + "\n").encode())
        f.write(b'{"chosen": "\xff\xfe", "rejected": "y"}\n')
        f.write((json.dumps(good) + "\n").encode())
    ds, report = load_hh_rlhf(data_files=path)
    assert len(ds) == 2 and report["rows"] == 5 and report["dropped"]["malformed"] == 3
    with pytest.raises(DataError, match=r"test\.jsonl\.gz:2: malformed JSON"):
        load_hh_rlhf(data_files=path, strict=True)
    with pytest.raises(DataError, match="does not exist"):
        load_hh_rlhf(data_dir=tmp_path / "missing")
    with pytest.raises(DataError, match="data_files not found"):
        load_hh_rlhf(data_files=tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="unknown HH-RLHF subset"):
        load_hh_rlhf(subset="helpfull-base", data_dir=tmp_path)


def test_hh_env_tiny_preset(hh_env):
    u = hh_env.unwrapped
    assert u.data_report["dropped"]["empty_chosen"] == 4
    assert u.data_report["dropped"]["history_mismatch"] == 2
    assert "test split" in u.data_report["eval_from"]
    assert set(u.train_prompts).isdisjoint(u.eval_prompts)
    assert all(p.endswith("\n\nAssistant:") for p in u.train_prompts + u.eval_prompts)
    assert len(u.offline_dataset) == 64 and u.eta == 0.1
    venv = u.make_vec(4)
    obs, _ = venv.reset(seed=0)
    a = [r[0] for r in u.reference.sample(list(obs["prompt"]), n=1)]
    b = [r[0] for r in u.reference.sample(list(obs["prompt"]), n=1)]
    _, rew, term, _, info = venv.step((a, b))
    assert term.all() and set(rew.tolist()) <= {0.0, 1.0}
    m = rlhf_env.evaluate(u.reference, hh_env, n_prompts=8, n_samples=2, best_of_n=(1, 2))
    assert m["kl"] == pytest.approx(0.0, abs=1e-5) and "gold_reward_stderr" in m


def test_gold_labels_resample_preferences(hh_dir):
    kw = {"preset": "tiny", "data_dir": str(hh_dir), "subset": "harmless-base",
          "n_eval_prompts": 8, "n_offline": 200}
    human = rlhf_env.make("HH-RLHF-v0", labels="human", **kw).unwrapped.offline_dataset
    gold = rlhf_env.make("HH-RLHF-v0", labels="gold", **kw).unwrapped.offline_dataset
    assert human["prompt"] == gold["prompt"]
    pairs_h = {frozenset(p) for p in zip(human["chosen"], human["rejected"])}
    pairs_g = {frozenset(p) for p in zip(gold["chosen"], gold["rejected"])}
    assert pairs_h == pairs_g and human["chosen"] != gold["chosen"]


def test_without_network_the_error_names_the_kwargs(hh_dir):
    with pytest.raises(rlhf_env.InvalidArgumentError, match="allow_large_on_cpu=True"):
        rlhf_env.make("HH-RLHF-v0", data_dir=str(hh_dir), subset="harmless-base", device="cpu")
    with pytest.raises(DataError, match="reference_model="):
        rlhf_env.make("HH-RLHF-v0", data_dir=str(hh_dir), subset="harmless-base", device="cpu",
                      allow_large_on_cpu=True)


def test_the_missions_line_fails_fast_without_a_hub(tmp_path):
    """``rlhf_env.make("HH-RLHF-v0")`` with the hub unreachable: a clear error, before any
    download is tried (the reachability check comes first; its time is in the notes, not
    asserted here)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_ENDPOINT"] = "https://hub.invalid"  # an unreachable hub, whatever the network
    out = subprocess.run([sys.executable, "-c", "import rlhf_env; rlhf_env.make('HH-RLHF-v0')"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "DataError" in out.stderr and "data_dir=" in out.stderr and "preset='tiny'" in out.stderr


def test_a_local_copy_without_a_subset_takes_what_it_holds(hh_dir):
    from rlhf_env.envs.hh_rlhf import _load_splits

    _, _, report = _load_splits(None, str(hh_dir), None, False, 0.1)
    assert report["kept"] > 0 and all("harmless-base" in f for f in report["files"])
