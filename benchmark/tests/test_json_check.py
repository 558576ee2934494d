"""Parsed JSON checked against TypedDicts (benchmark.json_check): exact keys, JSON's scalars,
and the path of what is wrong."""

from typing import Literal, NotRequired, TypedDict

import pytest
from benchmark.json_check import RecordError, check


class Inner(TypedDict):
    rate: float
    count: int
    kind: Literal["a", "b"]
    note: NotRequired[str]


class Outer(TypedDict):
    items: list[Inner]
    by_name: dict[str, Inner | None]


GOOD = {"rate": 1, "count": 2, "kind": "a"}


def test_a_value_of_the_declared_shape_passes():
    check({"items": [GOOD, {**GOOD, "rate": 1.5, "note": "x"}], "by_name": {"x": None}}, Outer)


def items(**inner) -> dict:
    return {"items": [{**GOOD, **inner}], "by_name": {}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (items(count=2.0), r"record\.items\[0\]\.count: 2\.0 is not an integer"),
        (items(count=True), r"items\[0\]\.count: True is not an integer"),
        (items(kind="c"), r"items\[0\]\.kind: 'c' is not one of \['a', 'b'\]"),
        ({"items": [], "by_name": {}, "extra": 1}, r"record: unknown \['extra'\]"),
        ({"items": [{"rate": 1.0}], "by_name": {}}, r"items\[0\]: missing \['count', 'kind'\]"),
        ({"items": {}, "by_name": {}}, r"record\.items: \{\} is not a list"),
        # In a union, the alternative that got furthest is the one reported.
        (
            {"items": [], "by_name": {"x": {**GOOD, "rate": "fast"}}},
            r"by_name\.x\.rate: 'fast' is not a number",
        ),
    ],
)
def test_what_does_not_fit_is_refused_with_its_path(value, message):
    with pytest.raises(RecordError, match=message):
        check(value, Outer)


def test_a_type_the_checker_does_not_know_is_a_programming_error():
    with pytest.raises(TypeError, match="cannot check"):
        check(1, set[int])
