"""The steps of ``redfl run CONFIG`` one after the other, each timed (``bench/startup.py``).

Does what the command does, in its order: import the command's modules, validate the
config and build the federation, start or join Ray, start the workers, run the first round,
run the other rounds, stop the federation, leave Ray. Prints one JSON line: the wall clock
(``time.time()``) when the interpreter handed over to this script and at the end of each
step, so that the caller adds the interpreter's start and exit around them.
"""

from __future__ import annotations

import time

STARTED = time.time()

import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    marks: list[tuple[str, float]] = [("script", STARTED)]

    def mark(step: str) -> None:
        marks.append((step, time.time()))

    import redfl.cli  # noqa: F401  the command's modules, as `redfl run` loads them

    gc.freeze()  # as the command does after its imports and at its end
    mark("imports")
    from redfl.run.prepare import prepare

    prepared = prepare(sys.argv[1], {"rounds": int(sys.argv[2])} if len(sys.argv) > 2 else {})
    mark("config")
    prepared.connect()
    mark("ray")
    federation = prepared.federation
    federation._start()  # the workers: placement group, actors, their imports
    mark("workers")
    rounds = prepared.config.federation.rounds
    federation.train(1)
    mark("first_round")
    federation.train(rounds - 1)
    mark("other_rounds")
    federation.stop()
    mark("stop")
    from redfl.runtime.embedded import leave_ray

    leave_ray()
    mark("leave_ray")
    print(json.dumps(marks), flush=True)
    gc.freeze()


if __name__ == "__main__":
    main()
