"""CPU % and memory of a service while it is under load, sampled in the background.

Natively, and for containers on Linux, from the service's process tree (psutil). A container
under Docker Desktop (macOS) runs in a VM whose processes the host cannot see: there, from
`docker stats`, which reports the container's memory use (cgroup, page cache excluded)
rather than RSS, about once a second. Each summary says which it was (`method`).
"""

import json
import re
import subprocess
import threading

import psutil


class ResourceSampler:
    """Samples the whole process trees of `pids` together every `interval` seconds until
    stopped."""

    def __init__(self, *pids: int, interval: float = 0.1) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.cpu_percent: list[float] = []
        self.rss_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._known: dict[int, psutil.Process] = {}

    def __enter__(self) -> "ResourceSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[psutil.Process]:
        processes = [p for root in self.roots for p in [root, *root.children(recursive=True)]]
        # Keep the same Process objects so cpu_percent measures since the last sample.
        return [self._known.setdefault(p.pid, p) for p in processes]

    def _run(self) -> None:
        for process in self._tree():
            process.cpu_percent(None)
        while not self._stop.wait(self.interval):
            cpu = rss = 0.0
            try:
                for process in self._tree():
                    cpu += process.cpu_percent(None)
                    rss += process.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
            self.cpu_percent.append(cpu)
            self.rss_mb.append(rss)

    def summary(self) -> dict[str, float | str]:
        return summarise(self.cpu_percent, self.rss_mb, self.interval, "psutil process tree")


def summarise(
    cpu_percent: list[float], rss_mb: list[float], interval: float, method: str
) -> dict[str, float | str]:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    return {
        "samples": len(rss_mb),
        "cpu_percent_mean": mean(cpu_percent),
        "cpu_percent_peak": max(cpu_percent, default=0.0),
        "rss_mb_mean": mean(rss_mb),
        "rss_mb_peak": max(rss_mb, default=0.0),
        "interval_s": interval,
        "method": method,
    }


_UNITS = {"b": 1, "kb": 1e3, "kib": 2**10, "mb": 1e6, "mib": 2**20, "gb": 1e9, "gib": 2**30}


def parse_docker_size(text: str) -> float:
    """ "123.4MiB" (a `docker stats` size) in MiB."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]+)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a docker size: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2).lower()] / 2**20


class DockerStatsSampler:
    """`docker stats` of one container, streamed (one sample about every second)."""

    def __init__(self, container: str) -> None:
        self.container = container
        self.cpu_percent: list[float] = []
        self.rss_mb: list[float] = []
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> "DockerStatsSampler":
        self._process = subprocess.Popen(
            ["docker", "stats", "--format", "{{json .}}", self.container],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._process is not None
        # NOTE: `docker stats` streaming to a pipe does not exit on SIGTERM.
        self._process.kill()
        self._process.wait()
        self._thread.join()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            # NOTE: the stream carries terminal escapes (cursor home, clear line) around
            # each JSON document, even when not on a terminal.
            start = line.find("{")
            if start < 0:
                continue
            stats, _ = json.JSONDecoder().raw_decode(line, start)
            if stats.get("CPUPerc", "--") == "--":  # not started yet
                continue
            self.cpu_percent.append(float(stats["CPUPerc"].rstrip("%")))
            self.rss_mb.append(parse_docker_size(stats["MemUsage"].split("/")[0]))

    def summary(self) -> dict[str, float | str]:
        return summarise(self.cpu_percent, self.rss_mb, 1.0, "docker stats (cgroup memory)")
