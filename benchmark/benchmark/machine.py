"""The machine a run measures: what it is, its results folder, and how far cores can be pinned.

Results from different machines sit side by side under `results/<machine>/`, the name built
from what makes runs comparable: CPU model, cores, OS and architecture; another model than the
default one has its results in `results/<machine>/<model>/`.
"""

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weather_model.architectures import ARTIFACTS_ROOT, DEFAULT_ARCHITECTURE

from benchmark.record import MachineIdentity

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
# The machine whose run the README's headline table shows (benchmark.report): the one where
# every strategy and variant was measured in full, natively and in containers.
REFERENCE_MACHINE = "intel-xeon-2-cores-linux-x86_64"
# The model the harness measures: the default one, as `make export` writes it.
ARTIFACTS = ROOT / ARTIFACTS_ROOT / DEFAULT_ARCHITECTURE


def cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo (Linux), sysctl (macOS), else `platform`."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            # x86 says "model name"; many arm64 kernels say nothing but "CPU part".
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    if shutil.which("sysctl"):
        brand = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
        ).stdout.strip()
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown CPU"


def describe() -> MachineIdentity:
    """The comparable identity of this machine (what names its results folder)."""
    return MachineIdentity(
        cpu_model=cpu_model(),
        cpus_online=os.cpu_count() or 1,
        os=platform.system().lower(),
        arch=platform.machine().lower(),
    )


def machine_name(machine: MachineIdentity) -> str:
    """`results/` folder name, e.g. amd-epyc-2-cores-linux-x86_64 or
    apple-m2-max-12-cores-darwin-arm64."""
    cpu = re.sub(r"\(r\)|\(tm\)|cpu|@.*$|processor", " ", machine["cpu_model"].lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-")
    return f"{cpu}-{machine['cpus_online']}-cores-{machine['os']}-{machine['arch']}"


def results_folder(machine: MachineIdentity, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """Where a run's records go: the machine's folder for the default model (the published
    results' place), a folder of the model's name in it for any other."""
    folder = RESULTS / machine_name(machine)
    return folder if architecture == DEFAULT_ARCHITECTURE else folder / architecture


def model_folders(machine_folder: Path) -> list[tuple[Path, str]]:
    """results_folder's layout read back: each model's folder in a machine's, and the model
    (its architecture), the default's first."""
    others = [(p, p.name) for p in sorted(machine_folder.iterdir()) if p.is_dir()]
    return [(machine_folder, DEFAULT_ARCHITECTURE), *others]


# --- pinning: taskset where it exists (Linux), else unpinned with a recorded warning -------


def parse_cpu_list(cpus: str) -> set[int]:
    """A taskset-style list ("0", "0,2", "0-3") as CPU numbers."""
    result: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        result.update(range(int(first), int(last or first) + 1))
    return result


def taskset_prefix(cpus: str | None) -> list[str]:
    """`taskset -c cpus`, to put before a command; nothing where taskset does not exist
    (macOS) or no cores are asked for: the command then runs on every core."""
    if not cpus or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", cpus]


def can_pin_threads() -> bool:
    return hasattr(os, "sched_setaffinity")


@contextmanager
def pinned(cpus: str | None) -> Iterator[None]:
    """This thread (and the threads it starts) on `cpus` for the duration, where the
    platform can pin (not macOS)."""
    if not cpus or not can_pin_threads():
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, parse_cpu_list(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def pinning_warnings(mode: str) -> list[str]:
    """What this platform cannot pin, recorded in the raw results and shown by the report."""
    warnings = []
    if not shutil.which("taskset"):
        unpinned = (
            "the load generator" if mode == "compose" else "the services and the load generator"
        )
        warnings.append(
            f"taskset not found: {unpinned} ran on any core instead of the cores given, "
            "so load and service competed for the same cores"
        )
    if not can_pin_threads():
        warnings.append("no sched_setaffinity: the in-process ceiling ran unpinned")
    return warnings
