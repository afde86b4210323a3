"""Choosing OpenMP's wait policy before torch is imported (it is read once, when OpenMP loads).

With the default (active) policy an OpenMP thread that reaches the end of a parallel region
spins, waiting for the others. On a machine whose cores are shared with other busy processes
the thread it waits for is often descheduled, so every parallel op pays for a scheduler time
slice, and the spinning takes CPU from everyone; many small ops (inference, small presets)
then run several times slower, whatever their FLOPs. PASSIVE makes waiting threads sleep.
Both sides of a benchmark run in one process, so they always share the policy.
"""

from __future__ import annotations

import os


def choose_wait_policy(argv: list[str]) -> str:
    """Set OMP_WAIT_POLICY from `--omp-wait-policy auto|passive|active` (auto: by the load)."""
    choice = "auto"
    for index, arg in enumerate(argv):
        if arg == "--omp-wait-policy" and index + 1 < len(argv):
            choice = argv[index + 1]
        elif arg.startswith("--omp-wait-policy="):
            choice = arg.split("=", 1)[1]
    if choice == "auto":
        if "OMP_WAIT_POLICY" in os.environ:
            return os.environ["OMP_WAIT_POLICY"]
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        choice = "passive" if busy else "active"
    os.environ["OMP_WAIT_POLICY"] = choice.upper()
    return os.environ["OMP_WAIT_POLICY"]
