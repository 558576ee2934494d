"""`ServiceError` answers every row of contract/errors.json with that row's status and the
contract's body; `ErrorType` is exactly the table's rows."""

import json
from pathlib import Path

import pytest
from serving_common.errors import RETRY_AFTER_SECONDS, ErrorType, ServiceError

TABLE = json.loads((Path(__file__).resolve().parents[2] / "contract" / "errors.json").read_text())


def test_error_type_members_are_the_tables_rows_in_order():
    assert [member.value for member in ErrorType] == list(TABLE)


@pytest.mark.parametrize("error_type", list(ErrorType))
def test_every_error_type_is_answered_with_its_rows_status_and_body(error_type):
    refusal = ServiceError(error_type, "what went wrong")
    assert refusal.status == TABLE[error_type.value]["status"]
    body = refusal.body()
    assert body == {"error": "what went wrong", "error_type": error_type.value}
    assert type(body["error_type"]) is str, "the body holds the plain string"
    # Only a 503 tells the client when to come back.
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if refusal.status == 503 else {}
    assert refusal.headers == retry


def test_overloaded_says_when_to_retry():
    assert ServiceError(ErrorType.OVERLOADED, "busy").headers == {"Retry-After": "1"}


def test_an_unknown_error_type_is_not_a_member():
    with pytest.raises(ValueError, match="no_such_row"):
        ErrorType("no_such_row")
    with pytest.raises(AttributeError):
        ErrorType.NO_SUCH_ROW  # noqa: B018 (the lookup is what is tested)
