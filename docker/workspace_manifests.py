"""Copy the uv workspace's manifests out of a build context, and the pinned uv requirement.

Used by docker/python-build.Dockerfile: OUT receives, at their paths, the root
pyproject.toml, uv.lock and the pyproject.toml of every member [tool.uv.workspace] lists
(globs and `exclude` as uv reads them); UV_REQUIREMENT, a requirements file holding `uv`
with the root's [tool.uv] required-version, the one place the uv version is written.

The root's copy keeps what uv reads: its [tool.*] tables of other tools (pytest's markers,
ruff's and mypy's settings), which only the host's tools read, are left out, so that editing
them leaves every image's dependency layers cached instead of reinstalling them all.

Usage: python3 workspace_manifests.py CONTEXT OUT UV_REQUIREMENT
"""

import re
import shutil
import sys
import tomllib
from pathlib import Path


def members(context: Path, workspace: dict) -> list[Path]:
    found = {
        path.relative_to(context)
        for pattern in workspace.get("members", [])
        for path in context.glob(pattern)
        if (path / "pyproject.toml").is_file()
    }
    excluded = {
        path.relative_to(context)
        for pattern in workspace.get("exclude", [])
        for path in context.glob(pattern)
    }
    return sorted(found - excluded)


# A table's header line: [name] or [[name]], the name quoted or not.
TABLE = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def uv_manifest(text: str) -> str:
    """The root manifest without the [tool.*] tables of tools other than uv."""
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        header = TABLE.match(line.strip())
        if header:
            name = header.group(1).replace('"', "")
            keep = not name.startswith("tool.") or name == "tool.uv" or name.startswith("tool.uv.")
        if keep:
            kept.append(line)
    return "".join(kept)


def main() -> None:
    context, out, uv_requirement = (Path(arg) for arg in sys.argv[1:4])
    root = (context / "pyproject.toml").read_text()
    uv = tomllib.loads(root)["tool"]["uv"]
    required = uv.get("required-version")
    if not required:
        sys.exit("pyproject.toml: [tool.uv] required-version is not set")
    (out / "pyproject.toml").write_text(uv_manifest(root))
    copied = [Path("uv.lock")]
    copied += [member / "pyproject.toml" for member in members(context, uv.get("workspace", {}))]
    for file in copied:
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(context / file, out / file)
    files = [Path("pyproject.toml"), *copied]
    uv_requirement.write_text(f"uv{required}\n")
    print(f"uv{required};", " ".join(str(file) for file in files))


if __name__ == "__main__":
    main()
