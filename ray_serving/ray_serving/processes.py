"""The service's own process tree: every process Ray starts descends from the launcher, and
none outlives it.

Ray starts its GCS, raylet and their helpers as the launcher's children, its workers (the
Serve controller, the proxy or HAProxy's manager, the replicas) as the raylet's, and Serve
runs haproxy as a child of its manager. The launcher becomes their subreaper, so a process
orphaned on the way down is re-parented to it rather than to init, and after Ray's own
shutdown it stops whatever is left of its descendants. Linux only (/proc, prctl); elsewhere
Ray's own shutdown is all there is.
"""

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PROC = Path("/proc")


def become_subreaper() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _parents() -> dict[int, int]:
    """Every live (not zombie) process: pid -> parent pid."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(ppid)
    return parents


def descendants(root: int | None = None) -> list[int]:
    """Live descendants of `root` (this process by default), parents before children."""
    if not PROC.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    frontier = [os.getpid() if root is None else root]
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            found.append(child)
            frontier.append(child)
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop_descendants(root: int | None = None, grace_seconds: float = 5.0) -> list[int]:
    """SIGTERM to every remaining descendant of `root` (this process by default), SIGKILL
    to those alive after `grace_seconds`; the pids that needed stopping."""
    left = descendants(root)
    if not left:
        return []
    _signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while (alive := [p for p in descendants(root) if p in left]) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(alive, signal.SIGKILL)
    return left
