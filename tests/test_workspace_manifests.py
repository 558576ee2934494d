"""docker/workspace_manifests.py, which picks the uv workspace's manifests out of the build
context for model-serving/python-build: every member's, and the root's without the tables
only the host's tools read, so that editing those leaves the images' dependency layers cached."""

import subprocess
import sys
import tomllib
from pathlib import Path

from helpers import ROOT

SCRIPT = ROOT / "docker" / "workspace_manifests.py"


def pick(context: Path, out: Path) -> str:
    """The script run on `context` as the Dockerfile runs it; its uv requirement."""
    requirement = out / "uv-requirement.txt"
    out.mkdir()
    subprocess.run([sys.executable, SCRIPT, context, out, requirement], check=True)
    return requirement.read_text()


def test_every_member_and_the_lock_are_picked_and_uv_pinned(tmp_path):
    requirement = pick(ROOT, tmp_path / "out")
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert requirement == f"uv{root['tool']['uv']['required-version']}\n"
    assert (tmp_path / "out" / "uv.lock").read_bytes() == (ROOT / "uv.lock").read_bytes()
    picked = {path.parent for path in (tmp_path / "out").rglob("pyproject.toml")}
    members = {path.parent for path in ROOT.glob("*/pyproject.toml")}
    assert {p.relative_to(tmp_path / "out") for p in picked} - {Path(".")} == {
        p.relative_to(ROOT) for p in members
    }
    for member in members:
        copy = tmp_path / "out" / member.relative_to(ROOT) / "pyproject.toml"
        assert copy.read_bytes() == (member / "pyproject.toml").read_bytes()


def test_the_root_keeps_what_uv_reads_and_drops_the_other_tools_tables(tmp_path):
    pick(ROOT, tmp_path / "out")
    original = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copy = tomllib.loads((tmp_path / "out" / "pyproject.toml").read_text())
    assert set(original["tool"]) > {"uv"}  # pytest, ruff, mypy: something to leave out
    assert copy == {**original, "tool": {"uv": original["tool"]["uv"]}}


def test_editing_a_host_tools_table_leaves_the_picked_root_as_it_was(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    text = (ROOT / "pyproject.toml").read_text()
    (context / "uv.lock").write_text("")
    (context / "pyproject.toml").write_text(text)
    before = pick(context, tmp_path / "before"), (tmp_path / "before" / "pyproject.toml")
    edited = text.replace("[tool.mypy]", '[tool.mypy]\nstrict = true\n\n["tool".ruff.format]\n')
    assert edited != text
    (context / "pyproject.toml").write_text(edited)
    after = pick(context, tmp_path / "after"), (tmp_path / "after" / "pyproject.toml")
    assert before[0] == after[0] and before[1].read_text() == after[1].read_text()
    # A change uv reads is kept.
    uv_edit = text.replace("[tool.uv]", "[tool.uv]\nnative-tls = true")
    (context / "pyproject.toml").write_text(uv_edit)
    pick(context, tmp_path / "uv")
    assert "native-tls = true" in (tmp_path / "uv" / "pyproject.toml").read_text()
