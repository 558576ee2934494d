"""Records built from the committed ones for the tests: what a run of another shape would
have written."""

import copy

from benchmark.metrics import rounds_of


def with_rounds(record: dict, scales: dict[str, list[float]]) -> dict:
    """`record` as if measured in more rounds: each later round a copy of the first with
    requests/s scaled (`scales[name]`, one factor per later round)."""
    grown = copy.deepcopy(record)
    grown["plan"]["rounds"] = 1 + len(next(iter(scales.values())))
    for name, factors in scales.items():
        result = grown["services"][name]
        first = rounds_of(result)[0]
        for factor in factors:
            repeat = copy.deepcopy(first)
            repeat["main"]["ab"]["requests_per_second"] *= factor
            result["repeats"].append(repeat)
    return grown
