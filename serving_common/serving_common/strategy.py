"""Strategies declare themselves: one `strategy.toml` in each strategy's folder.

The manifest is the one place for a strategy's name, port, model artifact, native start
command and container image. The harness, the cross-service test suites and the README's
strategy table find strategies by listing the repository's folders; a Python service reads
its own manifest at startup for its name and default port. Manifests are checked when they
are read, and a bad one is refused with a line that says how to fix it.
"""

import os
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
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


# The one Dockerfile of every Python strategy without its own (built with STRATEGY and the
# other arguments docker/compose_files.py renders into the Compose files from [docker]).
PYTHON_SERVICE_DOCKERFILE = ROOT / "docker" / "python-service.Dockerfile"


@dataclass(frozen=True)
class DockerSpec:
    """The manifest's [docker] table: the image, and what Compose and the Python service
    Dockerfile need to know about it."""

    dockerfile: Path  # absolute; the build context is the repository root
    image: str
    target: str | None = None
    # Compose's default memory limit (Compose syntax: 1500m, 3g), over the measured peak.
    memory_limit: str = "2g"
    # /dev/shm's size (Compose's shm_size), when Docker's 64 MB default is too small.
    shm_size: str | None = None
    # The prefix of the strategy's Compose variables (<PREFIX>_MODEL_URI,
    # <PREFIX>_MEMORY_LIMIT); by default its name without "_serving", upper-cased.
    env_prefix: str = ""
    # Seconds the health check allows for startup before a failure counts.
    start_period: int = 60
    # Compile the venv to bytecode at build: for services that start many processes, each
    # importing a large framework (the runtime user cannot write bytecode).
    compile_bytecode: bool = False
    # HOME of the image's unnamed user, for software that writes under it ("/" is not
    # writable).
    home: str = "/"
    # The export job's image (docker/exporter.Dockerfile) starts from this strategy's
    # third-party dependencies, sharing their layer (torch) instead of installing it again.
    exporter_base: bool = False


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
    # Grids of configurations the runner's `--sweep NAME` measures (`[sweeps.NAME]`), each
    # setting given the values to try (e.g. batching = {MAX_BATCH_SIZE = ["4", "8"]}): every
    # combination becomes a variant "<name>+NAME-<value>-<value>" (benchmark.modes).
    sweeps: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    # A framework strategy: the framework's name (e.g. "LitServe"), set for a strategy whose
    # framework hosts `predictor`. The results' framework table sets it against the strategy
    # hosting the same predictor without a framework (what the framework costs; see
    # framework_hosts), so no manifest names another strategy.
    framework: str | None = None
    # The naive baseline the results measure every other strategy against (one strategy).
    baseline: bool = False
    # Scenarios only this strategy runs (e.g. a multi-node cluster), by name: each a table
    # the harness reads (`[scenarios.NAME]` in the manifest).
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Compiled packages the strategy cannot run without (e.g. its runtime): uv.lock must hold
    # a wheel of each for every platform the project supports (tests/test_platforms.py).
    wheels: tuple[str, ...] = ()
    # Configurations the fidelity report (benchmark/benchmark/fidelity.py) runs as this real
    # service, natively, over HTTP, each named and given as its environment
    # (`[fidelity.NAME]`): for a strategy whose preprocessing is not the in-process
    # pipelines' code. MODEL_URI, if set, names an artifact constant of weather_model.contract
    # (default: `model`), which the report resolves to the exported file.
    fidelity: dict[str, dict[str, str]] = field(default_factory=dict)
    # Whether what it puts in front of its admission (e.g. a proxy) answers `Expect:
    # 100-continue` with `100 Continue` itself: a refused client then sends its body before it
    # gets the 503 (contract/README.md), instead of being refused from its headers.
    ingress_continues: bool = False

    @property
    def python_package(self) -> str | None:
        """The uv workspace package of a Python strategy (its folder's pyproject.toml's
        `[project] name`), what its image installs; None for a strategy without one."""
        pyproject = self.folder / "pyproject.toml"
        if not pyproject.is_file():
            return None
        return str(tomllib.loads(pyproject.read_text())["project"]["name"])

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
    if not _is_artifact(model):
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
    sweeps = raw.get("sweeps", {})
    if not isinstance(sweeps, dict) or not all(
        isinstance(grid, dict)
        and grid
        and all(
            isinstance(k, str)
            and k.isupper()
            and isinstance(values, list)
            and values
            and all(isinstance(v, str) and v for v in values)
            for k, values in grid.items()
        )
        for grid in sweeps.values()
    ):
        raise fail(
            "`[sweeps.NAME]` must be tables of non-empty lists of environment strings, "
            'e.g. MAX_BATCH_SIZE = ["4", "8"]'
        )
    framework = raw.get("framework")
    if framework is not None and (not isinstance(framework, str) or not framework):
        raise fail('`framework` must be the framework\'s name, e.g. "LitServe"')
    if framework is not None and predictor is None:
        raise fail(
            "`framework` needs `predictor`: the results set a framework against the strategy "
            "hosting the same predictor without one"
        )
    baseline = raw.get("baseline", False)
    if not isinstance(baseline, bool):
        raise fail("`baseline` must be true or false")
    scenarios = raw.get("scenarios", {})
    if not isinstance(scenarios, dict) or not all(isinstance(t, dict) for t in scenarios.values()):
        raise fail("`[scenarios.NAME]` must be tables")
    wheels = raw.get("wheels", [])
    if not isinstance(wheels, list) or not all(isinstance(w, str) and w for w in wheels):
        raise fail('`wheels` must be a list of package names, e.g. ["onnxruntime"]')
    fidelity = raw.get("fidelity", {})
    if not isinstance(fidelity, dict) or not all(
        isinstance(env, dict)
        and all(isinstance(k, str) and k.isupper() and isinstance(v, str) for k, v in env.items())
        and _is_artifact(env.get("MODEL_URI", model))
        for env in fidelity.values()
    ):
        raise fail(
            "`[fidelity.NAME]` must be tables of environment strings, MODEL_URI (if set) an "
            'artifact constant as in `model`, e.g. MODEL_URI = "FIXED_ONNX_FILE"'
        )
    ingress_continues = raw.get("ingress_continues", False)
    if not isinstance(ingress_continues, bool):
        raise fail("`ingress_continues` must be true or false")
    docker = _docker_spec(raw["docker"], path.parent, fail) if "docker" in raw else None
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
        sweeps={
            name: {key: tuple(values) for key, values in grid.items()}
            for name, grid in sweeps.items()
        },
        framework=framework,
        baseline=baseline,
        scenarios=scenarios,
        wheels=tuple(wheels),
        fidelity=fidelity,
        ingress_continues=ingress_continues,
    )


def _is_artifact(constant: str) -> bool:
    """Whether `constant` names an artifact file constant of weather_model.contract."""
    return isinstance(getattr(contract, constant, None), str) and constant.endswith("_FILE")


def _docker_spec(table: Any, folder: Path, fail: Callable[[str], ManifestError]) -> DockerSpec:
    """[docker]; `dockerfile` omitted means the shared Python service Dockerfile."""
    if not isinstance(table, dict):
        raise fail("`[docker]` must be a table")
    flags = {"compile_bytecode", "exporter_base"}
    strings = {k: v for k, v in table.items() if k not in flags and k != "start_period"}
    if not all(isinstance(v, str) and v for v in strings.values()):
        raise fail("`[docker]` values must be non-empty strings, except the ones below")
    for key in flags & set(table):
        if not isinstance(table[key], bool):
            raise fail(f"`[docker]` {key} must be true or false")
    if "image" not in table:
        raise fail('`[docker]` needs `image`, e.g. image = "model-serving/NAME"')
    for key in ("memory_limit", "shm_size"):
        if key in table and not re.fullmatch(r"\d+[kmg]", table[key]):
            raise fail(f"`[docker]` {key} must be a size in Compose syntax, e.g. 1500m or 2g")
    start_period = table.get("start_period", DockerSpec.start_period)
    if not isinstance(start_period, int) or isinstance(start_period, bool) or start_period < 1:
        raise fail("`[docker]` start_period must be a whole number of seconds, e.g. 60")
    unknown = set(table) - {f.name for f in fields(DockerSpec)}
    if unknown:
        raise fail(f"`[docker]` has unknown keys {sorted(unknown)}")
    # NOTE: not checked for existence: a running image has the manifest, not the
    # Dockerfile (tests/test_layout.py checks every Dockerfile in the repository).
    dockerfile = PYTHON_SERVICE_DOCKERFILE
    if "dockerfile" in table:
        dockerfile = folder / table["dockerfile"]
    prefix = table.get("env_prefix", folder.name.removesuffix("_serving").upper())
    return DockerSpec(**{**table, "dockerfile": dockerfile, "env_prefix": prefix})


def strategy_folder(module_file: str) -> Path:
    """The folder holding the strategy.toml of the package that holds `module_file` (a
    top-level module of a strategy's package): in the repository, the package's parent;
    installed from a wheel, the package itself, which ships the manifest (its
    pyproject.toml's force-include)."""
    package = Path(module_file).resolve().parent
    return package.parent if (package.parent / MANIFEST).is_file() else package


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
    baselines = [s.name for s in found.values() if s.baseline]
    if len(baselines) > 1:
        raise ManifestError(f"more than one strategy sets `baseline = true`: {baselines}")
    return dict(sorted(found.items()))


def framework_hosts(strategies: dict[str, Strategy]) -> dict[str, str]:
    """Each framework strategy (`framework` set) -> the one strategy hosting the same
    `predictor` without a framework, which the results set it against. ManifestError when
    there is none or more than one: the comparison would be missing or ambiguous."""
    hosts: dict[str, str] = {}
    for strategy in strategies.values():
        if strategy.framework is None:
            continue
        found = [
            s.name
            for s in strategies.values()
            if s.framework is None and s.predictor == strategy.predictor
        ]
        if len(found) != 1:
            raise ManifestError(
                f"{strategy.folder / MANIFEST}: `framework` needs exactly one strategy hosting "
                f"{strategy.predictor} without a framework to be set against; found {found}"
            )
        hosts[strategy.name] = found[0]
    return hosts


def main() -> None:
    """`python -m serving_common.strategy NAME FIELD`: one fact of a strategy, for the
    Makefile and a strategy's own make rules (e.g. `$(STRATEGY) model_file`)."""
    name, field = sys.argv[1:3]
    print(getattr(discover_strategies()[name], field))


if __name__ == "__main__":
    main()
