"""``python -m agents.zoo``: the same as the ``rlhf-zoo`` command."""

from agents.zoo.cli import console

if __name__ == "__main__":
    console()
