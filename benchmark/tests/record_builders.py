"""Records built from the committed ones for the tests: what a run of another shape would
have written."""

import copy

from benchmark.metrics import rounds_of


def with_rounds(record: dict, scales: dict[str, list[float]]) -> dict:
    """`record` as if measured in 1 + len(factors) rounds: its first round, then each later
    round a copy of the first with requests/s scaled (`scales[name]`, one factor per later
    round); the configurations not in `scales` keep their first round only."""
    grown = copy.deepcopy(record)
    grown["plan"]["rounds"] = 1 + len(next(iter(scales.values())))
    for result in grown["services"].values():
        if "failed" not in result:
            result["repeats"] = []
    for name, factors in scales.items():
        result = grown["services"][name]
        first = rounds_of(result)[0]
        for factor in factors:
            repeat = copy.deepcopy(first)
            repeat["main"]["ab"]["requests_per_second"] *= factor
            result["repeats"].append(repeat)
    return grown


def ab_result(ok_per_s: float, refused_per_s: float = 0.0, seconds: float = 10.0) -> dict:
    """ab's summary (benchmark.record.AbResult) of a run of `seconds` answering `ok_per_s`
    200s and `refused_per_s` 503s a second."""
    return {
        "complete_requests": seconds * (ok_per_s + refused_per_s),
        "failed_requests": 0.0,
        "non_2xx": seconds * refused_per_s,
        "connection_errors": 0.0,
        "requests_per_second": ok_per_s + refused_per_s,
        "time_per_request_ms": 1.0,
        "time_taken_s": seconds,
        **{f"p{p}_ms": 100.0 for p in (50, 66, 75, 80, 90, 95, 98, 99, 100)},
    }


def overload(
    capacity: float,
    flood_ok: float,
    refused: float,
    shares: dict[float, float],
    checks: list[float] | None = None,
) -> dict:
    """An overload phase (benchmark.record.Overload) at `capacity` requests/s: a 10 s flood
    with `flood_ok` 200s per second and `refused` 503s per second, and an open-loop step at
    each factor whose 200s are `shares[factor]` of capacity; the capacity checks beside
    them found `checks` (default: `capacity` each time)."""
    ab = ab_result(flood_ok, refused)
    if checks is None:
        checks = [capacity] * (len(shares) + 2)
    steps = [
        {
            "factor": factor,
            "offered_rps": round(factor * capacity),
            "command": ["oha", "-c", "1000"],
            "seconds": 10.0,
            "achieved_rps": factor * capacity,
            "success_rate": 1.0,
            "ok": round(10 * share * capacity),
            "non_2xx": round(10 * (factor - share) * capacity),
            "errors": 0,
            "at_deadline": 64,
            "p50_ms": 5.0,
            "p90_ms": 9.0,
            "p99_ms": 900.0,
            "ok_p50_ms": 20.0,
            "ok_p99_ms": 300.0,
        }
        for factor, share in shares.items()
    ]
    return {
        "capacity_rps": capacity,
        "capacity_checks": [
            {"command": ["ab", "-c", "50"], "ab": ab_result(rps, seconds=5.0)} for rps in checks
        ],
        "flood": {
            "command": ["ab", "-c", "200", "-r"],
            "ab": ab,
            "health": {"probes": 90, "failures": 0, "max_ms": 12.0},
        },
        "open_loop": steps,
    }
