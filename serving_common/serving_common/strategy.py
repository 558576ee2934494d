"""Strategies declare themselves: one `strategy.toml` in each strategy's folder.

The manifest is the one place for a strategy's name, port, model artifact, native start
command and container image. The harness, the cross-service test suites and the README's
strategy table find strategies by listing the repository's folders; a Python service reads
its own manifest at startup for its name and default port. Manifests are checked when they
are read, and a bad one is refused with a line that says how to fix it.
"""

import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weather_model import contract

MANIFEST = "strategy.toml"
ROOT = Path(__file__).resolve().parents[2]
# Extra folders to search for strategy folders (os.pathsep-separated), besides the
# repository root: strategies kept elsewhere, and the tests' throwaway strategies.
EXTRA_DIRS_ENV = "MODEL_SERVING_STRATEGY_DIRS"
# The word in `run` that stands for the project's Python interpreter.
PYTHON = "python"


class ManifestError(ValueError):
    """A strategy.toml that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class DockerSpec:
    dockerfile: Path  # absolute; the build context is the repository root
    image: str
    target: str | None = None


@dataclass(frozen=True)
class Strategy:
    name: str
    folder: Path
    title: str
    stack: str
    port: int
    model_constant: str  # a name in weather_model.contract
    run: tuple[str, ...]
    docker: DockerSpec | None
    # Python strategies hosted by serving_common: "package.module:Class" of the Predictor.
    predictor: str | None = None
    # The in-process pipeline (benchmark/benchmark/pipelines.py) whose ceiling this
    # strategy's efficiency is judged against: the one its default configuration runs.
    ceiling: str = "graph"
    # Configurations the harness measures besides the default one, each named and given as
    # the environment it adds (e.g. batched = {MAX_BATCH_SIZE = "8"}): "<name>+<variant>".
    variants: dict[str, dict[str, str]] = field(default_factory=dict)
    # A framework strategy: the strategy that hosts the same predictor without one, which
    # the results' framework table sets it against (what the framework costs).
    framework_over: str | None = None

    @property
    def model_file(self) -> str:
        """The artifact the strategy loads, e.g. model.optimized.onnx."""
        return str(getattr(contract, self.model_constant))

    def command(self) -> tuple[str, ...]:
        """The native start command; run it with `cwd=self.folder`."""
        first, *rest = self.run
        if first == PYTHON:
            return (sys.executable, *rest)
        if "/" in first:
            return (str(self.folder / first), *rest)
        return (first, *rest)


def load_strategy(folder: Path) -> Strategy:
    path = folder / MANIFEST
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from None
    return _check(path, raw)


def _check(path: Path, raw: dict[str, Any]) -> Strategy:
    def fail(message: str) -> ManifestError:
        return ManifestError(f"{path}: {message}")

    def text(key: str, table: dict[str, Any] = raw) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value:
            raise fail(f"`{key}` must be a non-empty string")
        return value

    name = text("name")
    if name != path.parent.name:
        raise fail(f"`name` is {name!r} but the folder is {path.parent.name!r}; make them equal")
    port = raw.get("port")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail("`port` must be an integer from 1 to 65535")
    model = text("model")
    if not isinstance(getattr(contract, model, None), str) or not model.endswith("_FILE"):
        files = sorted(k for k in vars(contract) if k.endswith("_FILE") and k != "METADATA_FILE")
        raise fail(f"`model` must name an artifact constant of weather_model.contract: {files}")
    run = raw.get("run")
    if not isinstance(run, list) or not run or not all(isinstance(a, str) for a in run):
        raise fail('`run` must be a non-empty list of strings, e.g. ["python", "-m", "pkg"]')
    predictor = raw.get("predictor")
    if predictor is not None and (not isinstance(predictor, str) or ":" not in predictor):
        raise fail('`predictor` must be an import path "package.module:Class"')
    variants = raw.get("variants", {})
    if not isinstance(variants, dict) or not all(
        isinstance(env, dict)
        and all(isinstance(k, str) and k.isupper() and isinstance(v, str) for k, v in env.items())
        for env in variants.values()
    ):
        raise fail('`[variants.NAME]` must be tables of environment strings, e.g. A = "1"')
    framework_over = raw.get("framework_over")
    if framework_over is not None and (not isinstance(framework_over, str) or not framework_over):
        raise fail("`framework_over` must name the strategy hosting the same predictor")
    docker = None
    if "docker" in raw:
        table = raw["docker"]
        # NOTE: not checked for existence: a running image has the manifest, not the
        # Dockerfile (tests/test_layout.py checks every Dockerfile in the repository).
        dockerfile = path.parent / text("dockerfile", table)
        docker = DockerSpec(dockerfile, text("image", table), table.get("target"))
    return Strategy(
        name=name,
        folder=path.parent,
        title=text("title"),
        stack=text("stack"),
        port=port,
        model_constant=model,
        run=tuple(run),
        docker=docker,
        predictor=predictor,
        ceiling=text("ceiling") if "ceiling" in raw else Strategy.ceiling,
        variants=variants,
        framework_over=framework_over,
    )


def strategy_dirs() -> list[Path]:
    extra = os.environ.get(EXTRA_DIRS_ENV, "")
    return [ROOT, *(Path(p) for p in extra.split(os.pathsep) if p)]


def discover_strategies(dirs: list[Path] | None = None) -> dict[str, Strategy]:
    """Every strategy folder directly under `dirs` (the repository root and
    $MODEL_SERVING_STRATEGY_DIRS by default), by name, in name order."""
    found: dict[str, Strategy] = {}
    ports: dict[int, str] = {}
    for folder in dirs if dirs is not None else strategy_dirs():
        for manifest in sorted(folder.glob(f"*/{MANIFEST}")):
            strategy = load_strategy(manifest.parent)
            if strategy.name in found:
                raise ManifestError(f"{manifest}: a strategy named {strategy.name} exists already")
            if strategy.port in ports:
                raise ManifestError(
                    f"{manifest}: port {strategy.port} is taken by {ports[strategy.port]}"
                )
            found[strategy.name] = strategy
            ports[strategy.port] = strategy.name
    for strategy in found.values():
        if strategy.framework_over is not None and strategy.framework_over not in found:
            raise ManifestError(
                f"{strategy.folder / MANIFEST}: `framework_over` names "
                f"{strategy.framework_over!r}, which is not a strategy here"
            )
    return dict(sorted(found.items()))


def main() -> None:
    """`python -m serving_common.strategy NAME FIELD`: one fact of a strategy, for the
    Makefile (e.g. `rust_onnx_serving model_file`)."""
    name, field = sys.argv[1:3]
    print(getattr(discover_strategies()[name], field))


if __name__ == "__main__":
    main()
