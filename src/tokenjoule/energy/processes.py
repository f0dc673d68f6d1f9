"""Which processes on a measured GPU are ours.

NVML lists the PIDs holding a compute context on a device. Ours are this process and its
descendants (vLLM runs its engine in child processes). Inside a container NVML may report
host PIDs, which do not match ours; then we cannot attribute them, and say so in the notes
instead of raising a false alarm.
"""

from __future__ import annotations

import os


def own_pids(root_pid: int | None = None, proc: str = "/proc") -> set[int]:
    """`root_pid` (default: this process) and all its descendants, from /proc/*/stat."""
    root = os.getpid() if root_pid is None else root_pid
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return {root}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat")) as f:
                stat = f.read()
        except OSError:
            continue  # the process ended while we looked
        # the command name (field 2) may contain spaces and parentheses: split after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 2 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    result, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in result:
            result.add(pid)
            stack.extend(children.get(pid, []))
    return result


def classify_gpu_pids(reported: list[int], own: set[int], proc: str = "/proc") -> tuple[list[int], list[int]]:
    """Split NVML-reported PIDs into (foreign, unattributed).

    If any reported PID is ours, NVML and we share a PID namespace: every other PID is
    foreign. Otherwise a PID that exists in our /proc and is not ours is foreign, and one
    that does not exist here is unattributed (most likely a host PID seen from a container).
    """
    others = [p for p in reported if p not in own]
    if any(p in own for p in reported):
        return others, []
    foreign = [p for p in others if os.path.exists(os.path.join(proc, str(p)))]
    unattributed = [p for p in others if p not in foreign]
    return foreign, unattributed
