"""oha, the open-loop load generator: a fixed request rate, latency measured from when each
request should have been sent (--latency-correction), so queueing is not hidden."""

import json
import subprocess
from pathlib import Path
from typing import Any

from benchmark.machine import taskset_prefix

OHA = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "oha"
# Connections available to keep the offered rate even when the service falls behind.
CONNECTIONS = 64


def oha_command(url: str, payload: Path, rate: int, seconds: float, content_type: str) -> list[str]:
    return [
        str(OHA), "-z", f"{seconds}s", "-q", str(rate), "-c", str(CONNECTIONS),
        "--latency-correction", "--wait-ongoing-requests-after-deadline",
        "--no-tui", "--output-format", "json",
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


def run_oha(command: list[str], cpus: str | None) -> dict[str, Any]:
    result = subprocess.run(
        [*taskset_prefix(cpus), *command], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"oha failed ({result.returncode}): {result.stderr.strip()[:300]}")
    return parse_oha(result.stdout)
