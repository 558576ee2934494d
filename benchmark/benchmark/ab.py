"""Apache Bench, as the original study ran it: command line and output parsing."""

import re
import subprocess
from pathlib import Path

from benchmark.machine import taskset_prefix

_NUMBERS = {
    "complete_requests": r"Complete requests:\s+(\d+)",
    "failed_requests": r"Failed requests:\s+(\d+)",
    "non_2xx": r"Non-2xx responses:\s+(\d+)",
    "requests_per_second": r"Requests per second:\s+([\d.]+)",
    "time_per_request_ms": r"Time per request:\s+([\d.]+) \[ms\] \(mean\)",
    "time_taken_s": r"Time taken for tests:\s+([\d.]+) seconds",
}
# Requests that got no answer at all: ab's "Failed requests" breakdown without "Length"
# (see parse_ab), and "Write errors", which it prints only when there are some.
_CONNECTION_ERRORS = (
    r"Connect: (\d+)",
    r"Receive: (\d+)",
    r"Exceptions: (\d+)",
    r"Write errors:\s+(\d+)",
)


def ab_command(
    url: str,
    payload: Path,
    requests: int,
    concurrency: int,
    seconds: int,
    content_type: str,
    keep_going: bool = False,
) -> list[str]:
    """The study's command line; `keep_going`: count a connection error and go on (-r)
    instead of ending the run at the first (what a load past capacity needs)."""
    # -t first: it implies -n 50000, and the -n after it sets the real cap.
    return [
        "ab", "-t", str(seconds), "-n", str(requests), "-c", str(concurrency),
        "-s", "3600", "-p", str(payload), "-T", content_type, "-q",
        *(["-r"] if keep_going else []), url,
    ]  # fmt: skip


def parse_ab(output: str) -> dict[str, float]:
    """ab's summary. NOTE: ab counts responses whose length differs from the first one as
    "Failed (Length)"; labels differ in length, so errors are judged by non_2xx only."""
    parsed: dict[str, float] = {}
    for key, pattern in _NUMBERS.items():
        match = re.search(pattern, output)
        parsed[key] = float(match.group(1)) if match else 0.0
    if "complete_requests" not in parsed or not re.search(_NUMBERS["requests_per_second"], output):
        raise ValueError("not an ab report")
    parsed["connection_errors"] = float(
        sum(int(m.group(1)) for p in _CONNECTION_ERRORS if (m := re.search(p, output)))
    )
    for percent, value in re.findall(r"^\s+(\d+)%\s+(\d+)", output, re.MULTILINE):
        parsed[f"p{percent}_ms"] = float(value)
    return parsed


def run_ab(command: list[str], cpus: str | None) -> tuple[dict[str, float], str]:
    result = subprocess.run(
        [*taskset_prefix(cpus), *command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ab failed ({result.returncode}): {result.stderr.strip()}")
    return parse_ab(result.stdout), result.stdout
