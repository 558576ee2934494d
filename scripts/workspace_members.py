"""Render the uv workspace's members into pyproject.toml: every folder directly under the
repository root that has a pyproject.toml (the shared packages and each Python strategy).

uv's member globs refuse a matched folder without a pyproject.toml (`members = ["*"]` fails on
contract/, docker/, a Rust strategy's folder), so the list is written out, from the folders
themselves: adding a strategy folder needs `make render`, never an edit here.

Usage: python scripts/workspace_members.py [--check]
  --check  write nothing; exit 1, saying so, when pyproject.toml is not up to date.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
# The members line(s) of [tool.uv.workspace], whatever they hold now.
MEMBERS = re.compile(r"(\[tool\.uv\.workspace\]\n(?:#.*\n)*)members = \[[^\]]*\]\n")


def members(root: Path = ROOT) -> list[str]:
    return sorted(
        folder.name
        for folder in root.iterdir()
        if not folder.name.startswith(".") and (folder / "pyproject.toml").is_file()
    )


def rendered(text: str, names: list[str]) -> str:
    lines = "".join(f'    "{name}",\n' for name in names)
    new, count = MEMBERS.subn(lambda m: f"{m.group(1)}members = [\n{lines}]\n", text, count=1)
    if count != 1:
        sys.exit(f"{PYPROJECT}: no `members = [...]` line under [tool.uv.workspace]")
    return new


def main() -> None:
    current = PYPROJECT.read_text()
    new = rendered(current, members())
    if "--check" in sys.argv[1:]:
        if new != current:
            sys.exit(f"{PYPROJECT}: the workspace members are not up to date: run `make render`")
        return
    if new != current:
        PYPROJECT.write_text(new)
        print(f"rendered {PYPROJECT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
