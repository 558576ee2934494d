"""The committed `error_types.py` is a fresh render of contract/errors.json, and the renderer
refuses a malformed table and reports a stale module."""

import json
from pathlib import Path

import pytest

from serving_common import render_errors

ERRORS_JSON = Path(__file__).resolve().parents[2] / "contract" / "errors.json"


def test_committed_module_is_a_fresh_render_of_errors_json():
    fresh = render_errors.render(json.loads(ERRORS_JSON.read_text()))
    assert render_errors.GENERATED.read_text() == fresh, (
        "serving_common/error_types.py is stale: run `python -m serving_common.render_errors`"
    )


def test_check_mode_fails_on_a_stale_module_and_write_mode_fixes_it(tmp_path, capsys):
    table = json.loads(ERRORS_JSON.read_text())
    table["teapot"] = {"status": 418, "when": "the client asked a teapot for coffee"}
    errors = tmp_path / "errors.json"
    errors.write_text(json.dumps(table))
    out = tmp_path / "error_types.py"
    out.write_text(render_errors.GENERATED.read_text())
    paths = ["--errors", str(errors), "--out", str(out)]

    assert render_errors.main(["--check", *paths]) == 1
    assert "differs" in capsys.readouterr().err
    assert render_errors.main(paths) == 0
    assert render_errors.main(["--check", *paths]) == 0
    assert 'TEAPOT = "teapot"' in out.read_text()
    assert "ErrorType.TEAPOT: 418," in out.read_text()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "non-empty"),
        ({"Bad-Name": {"status": 400, "when": "x"}}, "snake_case"),
        ({"ok": {"status": 200, "when": "x"}}, "HTTP error status"),
        ({"ok": {"status": "400", "when": "x"}}, "HTTP error status"),
        ({"ok": {"status": 400}}, "'when'"),
    ],
)
def test_a_malformed_table_is_refused_naming_the_row(table, message):
    with pytest.raises(ValueError, match=message):
        render_errors.render(table)
