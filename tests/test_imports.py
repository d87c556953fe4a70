import importlib
import pkgutil
import subprocess
import sys

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
