"""Run `make test`'s phases in order, each timed, and end with a table of their wall times, so a
slow step shows: `python3 .ci/phases.py "NAME=SHELL COMMAND" ...`. Stops at the first phase
that fails, with its exit code. Standard library only: the install phase runs before the venv exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def run_phases(phases: list[tuple[str, str]]) -> int:
    """Run each (name, command) in a shell, print its time after it and all times at the end."""
    times: list[tuple[str, float]] = []
    status = 0
    for name, command in phases:
        print(f"=== {name}: {command}", flush=True)
        start = time.perf_counter()
        status = subprocess.run(command, shell=True).returncode
        times.append((name, time.perf_counter() - start))
        print(
            f"=== {name}: {times[-1][1]:.1f} s{'' if status == 0 else f' (failed, exit {status})'}",
            flush=True,
        )
        if status != 0:
            break
    width = max(len(name) for name, _ in phases)
    print(f"\n{'phase':<{width}}  seconds   (load average at the end {os.getloadavg()[0]:.1f})")
    for name, seconds in times:
        print(f"{name:<{width}}  {seconds:7.1f}")
    print(f"{'total':<{width}}  {sum(s for _, s in times):7.1f}")
    return status


def main(argv: list[str]) -> int:
    phases = [tuple(arg.split("=", 1)) for arg in argv]
    if not phases or any(len(phase) != 2 for phase in phases):
        print('usage: phases.py "NAME=SHELL COMMAND" ...', file=sys.stderr)
        return 2
    return run_phases(phases)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
