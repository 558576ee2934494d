"""oha, the open-loop load generator: a fixed request rate, latency measured from when each
request should have been sent (--latency-correction), so queueing is not hidden."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.machine import taskset_prefix

OHA = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "oha"
# Connections available to keep the offered rate even when the service falls behind.
CONNECTIONS = 64
# What oha calls a request still in flight when the run's time is up and it does not wait.
AT_DEADLINE = "aborted due to deadline"


def oha_command(
    url: str,
    payload: Path,
    rate: int,
    seconds: float,
    content_type: str,
    connections: int = CONNECTIONS,
    by_status: bool = False,
    wait_at_deadline: bool = True,
) -> list[str]:
    """`by_status`: latency percentiles of the 2xx answers apart too (parse_by_status).
    `wait_at_deadline`: the requests in flight when the time is up are waited for, and the
    run lasts until the last answer; without, the run is exactly `seconds` long and they are
    counted apart (`at_deadline`), so that answers per second are those of the offered
    window alone (past capacity, the last paced refusals would add up to 2 s of idle)."""
    return [
        str(OHA), "-z", f"{seconds}s", "-q", str(rate), "-c", str(connections),
        "--latency-correction",
        *(["--wait-ongoing-requests-after-deadline"] if wait_at_deadline else []),
        "--no-tui", "--output-format", "json",
        *(["--stats-success-breakdown"] if by_status else []),
        "-m", "POST", "-T", content_type, "-D", str(payload), url,
    ]  # fmt: skip


def parse_oha(output: str) -> dict[str, Any]:
    report = json.loads(output)
    summary, percentiles = report["summary"], report["latencyPercentiles"]
    statuses = {str(k): int(v) for k, v in report.get("statusCodeDistribution", {}).items()}
    errors = sum(int(v) for v in report.get("errorDistribution", {}).values())
    return {
        "achieved_rps": summary["requestsPerSec"],
        "success_rate": summary["successRate"],
        "ok": statuses.get("200", 0),
        "non_2xx": sum(n for code, n in statuses.items() if not code.startswith("2")),
        "errors": errors,
        **{f"{name}_ms": 1000 * (percentiles.get(name) or 0.0) for name in ("p50", "p90", "p99")},
    }


def parse_by_status(output: str) -> dict[str, Any]:
    """parse_oha's summary, how long the run took, the requests still in flight at its
    deadline apart from the errors, and the 2xx answers' own latency (a command with
    `by_status`): past capacity, the refusals' latency says nothing of the work's."""
    report = json.loads(output)
    successful = report.get("latencyPercentilesSuccessful") or {}
    summary = parse_oha(output)
    at_deadline = int((report.get("errorDistribution") or {}).get(AT_DEADLINE, 0))
    return {
        **summary,
        "errors": summary["errors"] - at_deadline,
        "at_deadline": at_deadline,
        "seconds": report["summary"]["total"],
        **{f"ok_{name}_ms": 1000 * (successful.get(name) or 0.0) for name in ("p50", "p99")},
    }


def run_oha(
    command: list[str], cpus: str | None, parse: Callable[[str], dict[str, Any]] = parse_oha
) -> dict[str, Any]:
    result = subprocess.run(
        [*taskset_prefix(cpus), *command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"oha failed ({result.returncode}): {result.stderr.strip()[:300]}")
    return parse(result.stdout)
