"""CPU % and RSS of a process and all its children, sampled in the background."""

import threading

import psutil


class ResourceSampler:
    """Samples the whole process tree every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
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
        processes = [self.root, *self.root.children(recursive=True)]
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

    def summary(self) -> dict[str, float]:
        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else 0.0

        return {
            "samples": len(self.rss_mb),
            "cpu_percent_mean": mean(self.cpu_percent),
            "cpu_percent_peak": max(self.cpu_percent, default=0.0),
            "rss_mb_mean": mean(self.rss_mb),
            "rss_mb_peak": max(self.rss_mb, default=0.0),
            "interval_s": self.interval,
        }
