import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import agents
import rlhf_env


def _modules(pkg):
    yield pkg.__name__
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        yield m.name


@pytest.mark.parametrize("name", [*_modules(rlhf_env), *_modules(agents)])
def test_every_module_imports(name):
    importlib.import_module(name)


def test_import_rlhf_env_is_light():
    code = (
        "import sys, rlhf_env; "
        "heavy = [m for m in ('transformers', 'datasets', 'agents') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rlhf_env_help_and_list_do_not_load_torch():
    """`rlhf-env --help` and `rlhf-env list` answer at once: torch loads only for a table."""
    code = ("import sys, contextlib, io; from rlhf_env.__main__ import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['list'])\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


ROOT = Path(__file__).resolve().parents[1]


def _python_files(folder):
    return sorted((ROOT / folder).rglob("*.py"))


def _references(path):
    """Dotted names a module imports or reads as attributes of ``rlhf_env``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, node.lineno
            for a in node.names:
                yield f"{node.module}.{a.name}", node.lineno
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield f"{node.value.id}.{node.attr}", node.lineno


def test_agents_never_reach_the_judge_or_the_gold_evaluation():
    """Nothing under agents/ imports the judge; only the zoo (which reports results) may call
    rlhf_env.evaluate, and open a sealed run's judge with the token it sealed it with
    (rlhf_env.judging.unsealed). An agent that needs the answer has to ask for it in plain
    sight."""
    banned = ("rlhf_env.judging", "rlhf_env.judge", "rlhf_env.Judge")
    harness = ("rlhf_env.judging", "rlhf_env.judging.unsealed")  # the module, and this name
    offences = []
    for path in _python_files("agents"):
        rel = path.relative_to(ROOT).as_posix()
        zoo = rel.startswith("agents/zoo/")
        extra = () if zoo else ("rlhf_env.evaluate", "rlhf_env.evaluation")
        for name, line in _references(path):
            if zoo and name in harness:
                continue
            if name.startswith(banned + extra):
                offences.append(f"{rel}:{line} {name}")
    assert not offences, offences


def test_no_module_imports_another_modules_private_names():
    offences = []
    for folder in ("rlhf_env", "agents", "examples", "benchmarks"):
        for path in _python_files(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    for a in node.names:
                        if a.name.startswith("_") and a.name != "__version__":
                            offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {a.name}")
    assert not offences, offences


def test_rlhf_env_never_imports_agents():
    for path in _python_files("rlhf_env"):
        for name, line in _references(path):
            assert not name.startswith("agents"), f"{path}:{line} imports {name}"


def test_the_lm_wing_runs_one_way():
    """models -> policies -> backends, lm (DESIGN.md): lm/ imports none of the others, and
    backends/ neither policies/ nor models/."""
    banned = {"rlhf_env/lm": ("rlhf_env.policies", "rlhf_env.models", "rlhf_env.backends"),
              "rlhf_env/backends": ("rlhf_env.policies", "rlhf_env.models")}
    for folder, names in banned.items():
        for path in _python_files(folder):
            for name, line in _references(path):
                assert not name.startswith(names), f"{path}:{line} imports {name}"
