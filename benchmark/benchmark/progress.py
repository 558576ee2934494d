"""Where a benchmark run is and what is left, as plain log lines.

One line when a phase starts (its number, the run's elapsed time, an estimate of what is
left) and one every `heartbeat` seconds while a long phase runs. Lines only, never carriage
returns: a terminal and a CI log read the same.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Phase:
    label: str  # "<configuration>: main run"
    planned_s: float  # what the plan says it takes; 0 when unknown (image builds)


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        if minutes >= 60
        else f"{minutes}:{secs:02d}"
    )


@dataclass
class Progress:
    """The run's phases in order; `phase(label)` marks where it is."""

    phases: list[Phase]
    print_line: Callable[[str], None]
    heartbeat: float = 30.0
    started: float = field(default_factory=time.monotonic)
    done: int = 0  # phases finished
    _done_planned: float = 0.0
    _done_actual: float = 0.0

    def left_s(self) -> float:
        """The planned time of the phases left, scaled by how the finished ones compared
        with their plan (a fast machine ends ab before its time cap)."""
        planned = sum(p.planned_s for p in self.phases[self.done :])
        if self._done_planned > 0:
            planned *= min(2.0, max(0.3, self._done_actual / self._done_planned))
        return planned

    @contextmanager
    def phase(self, label: str) -> Iterator[None]:
        index = next(
            (i for i in range(self.done, len(self.phases)) if self.phases[i].label == label),
            None,
        )
        if index is None:  # not planned (a retry, an extra step): shown, not counted
            self.print_line(f"[+{clock(self.elapsed())}] {label}")
            yield
            return
        self.done = index
        planned = self.phases[index].planned_s
        self.print_line(
            f"[+{clock(self.elapsed())}, phase {index + 1}/{len(self.phases)}, "
            f"about {clock(self.left_s())} left] {label}"
        )
        began = time.monotonic()
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(label, began, planned, stop), daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            self.done = index + 1
            if planned > 0:
                self._done_planned += planned
                self._done_actual += time.monotonic() - began

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _beat(self, label: str, began: float, planned: float, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            so_far = time.monotonic() - began
            of = f" of about {clock(planned)}" if planned else ""
            self.print_line(f"[+{clock(self.elapsed())}]   {label}: {clock(so_far)}{of}")
