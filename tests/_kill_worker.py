"""Run ``rlhf-zoo`` in this process with a real SIGKILL armed at one point (test_durability.py).

    python tests/_kill_worker.py POINT N ARGS...     # ARGS as for rlhf-zoo

POINT is where the process kills itself (``kill -9``, so no handler or ``finally`` runs):

* ``after_answer``: at the N-th save of a round's pairs — the ledger has committed the
  labels, no checkpoint file of that round exists yet;
* ``mid_save``: during the N-th policy save, after half of a weights file is written;
* ``between_rounds``: right after the N-th round is checkpointed as complete;
* ``pairs_digest``: at the N-th pairs file, after its digest is written and before the
  table is renamed into place (write_pairs' own kill window);
* ``hold``: sleep N seconds in the first round (holding the run's lock), then carry on.
* ``ray_up``: every Ray task of ``leaderboard --workers`` writes its pid to the file
  ``$RLHF_KILL_MARKER`` and sleeps N seconds instead of training (test_ray_teardown.py
  kills the driver from outside once the file exists; the process does not kill itself).
"""

import os
import signal
import sys
import time


def main() -> int:
    point, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    import agents.checkpoint as checkpoint
    import rlhf_env.policies.base as policy_base
    from agents.loop import Agent
    from agents.zoo import cli

    calls = {"count": 0}

    def armed() -> bool:
        calls["count"] += 1
        return calls["count"] == n

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "after_answer":
        original = checkpoint.Checkpointer.save_pairs

        def save_pairs(self, t, data):
            if armed():
                die()
            return original(self, t, data)

        checkpoint.Checkpointer.save_pairs = save_pairs
    elif point == "mid_save":
        original_save = policy_base.save_file

        def save_file(tensors, filename, *a, **k):
            if armed():
                original_save(tensors, filename, *a, **k)
                with open(filename, "r+b") as f:
                    f.truncate(os.path.getsize(filename) // 2)
                die()
            return original_save(tensors, filename, *a, **k)

        policy_base.save_file = save_file
    elif point == "between_rounds":
        original_complete = checkpoint.Checkpointer.complete

        def complete(self, t, policy, **state):
            original_complete(self, t, policy, **state)
            if armed():
                die()

        checkpoint.Checkpointer.complete = complete
    elif point == "pairs_digest":
        import agents.files as files

        original_text = files.write_text

        def write_text(path, text):
            original_text(path, text)
            if str(path).endswith("pairs.parquet.sha256") and armed():
                die()

        files.write_text = write_text
    elif point == "hold":
        original_fit = Agent.learn

        def learn(self, *a, **k):
            time.sleep(n)
            return original_fit(self, *a, **k)

        Agent.learn = learn
    elif point == "ray_up":
        from agents.zoo import distributed

        marker = os.environ["RLHF_KILL_MARKER"]

        def run_job(*args, **kwargs):  # defined in __main__: Ray ships it by value
            import os
            import time

            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(n)

        distributed.run_job = run_job
    else:
        raise SystemExit(f"unknown point {point!r}")
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
