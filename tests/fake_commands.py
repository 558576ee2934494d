"""Fake commands on a PATH of their own, for testing shell scripts and Dockerfile RUN lines
as another platform would run them: a fake uname, stubs for the commands present, and
recorders that log their arguments (package managers)."""

import shutil
from pathlib import Path

UNAME = 'case "$1" in -m) echo {machine} ;; -s) echo {system} ;; *) exit 1 ;; esac'


def write_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def fake_commands(
    tmp_path: Path, system: str, machine: str, present: list[str], recorded: list[str]
) -> Path:
    """A folder for PATH: bash, a fake uname, a stub for each command `present`, and one that
    appends its arguments to tmp_path/calls for each of `recorded` (package managers)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    bash = shutil.which("bash")
    assert bash
    (folder / "bash").symlink_to(bash)
    write_command(folder, "uname", UNAME.format(machine=machine, system=system))
    for name in present:
        write_command(folder, name, "exit 0")
    for name in recorded:
        write_command(folder, name, f'echo "{name} $*" >> "{tmp_path / "calls"}"')
    return folder


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls"
    return log.read_text().splitlines() if log.exists() else []
