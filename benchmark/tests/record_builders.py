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
