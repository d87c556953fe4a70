"""``.ci/run`` runs exactly the README's test command, and makes the venv only through it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    commands = [ln for ln in lines if ln.startswith("python3 -m venv .venv") and "pytest" in ln]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_test_command_and_makes_the_venv_once():
    script = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()
              if ln.strip() and not ln.lstrip().startswith("#")]
    assert _readme_test_command() in script
    assert sum(ln.count("-m venv") for ln in script) == 1  # the command's own, nothing before it
