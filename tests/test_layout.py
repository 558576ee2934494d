"""One place per fact: every copy a file format forces (docker-compose.yml, a Dockerfile's
EXPOSE, a Rust constant, the READMEs' tables) is checked against its one source."""

import json
import os
import re
import subprocess
import tomllib

import pytest
import yaml
from benchmark.machine import ARTIFACTS as HARNESS_ARTIFACTS
from benchmark.report import STRATEGIES_END, STRATEGIES_START, render_strategies
from helpers import ROOT
from serving_common.serve import DRAIN_SECONDS
from serving_common.strategy import (
    ManifestError,
    discover_strategies,
    framework_hosts,
    load_strategy,
)
from weather_model.architectures import ARTIFACTS_ROOT, DEFAULT_ARCHITECTURE

# The repository's own strategies (not $MODEL_SERVING_STRATEGY_DIRS).
OWN = discover_strategies([ROOT])
CONTAINERISED = {name: s for name, s in OWN.items() if s.docker is not None}
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
# Compose services that are not strategies: the GCS emulator and the export job.
INFRASTRUCTURE = {"gcs", "model"}
DEFAULT = re.compile(r"\$\{\w+:-(.+)\}")


def compose_default(value: str) -> str:
    """`${VAR:-default}` -> default."""
    match = DEFAULT.fullmatch(value)
    assert match, value
    return match.group(1)


def test_the_root_lists_the_strategies():
    """Every folder with a manifest, under its folder's name; among them the roles the suites
    pick strategies by: the baseline, a plain Python host, a framework host, a compiled one."""
    folders = {manifest.parent.name for manifest in ROOT.glob("*/strategy.toml")}
    assert set(OWN) == folders and len(OWN) >= 3
    assert all(strategy.folder.name == name for name, strategy in OWN.items())
    assert sum(s.baseline for s in OWN.values()) == 1
    assert any(s.predictor and not s.framework and not s.baseline for s in OWN.values())
    assert any(s.framework for s in OWN.values())
    assert any(s.python_package is None for s in OWN.values())


def test_compose_services_are_the_containerised_strategies():
    assert set(COMPOSE) - INFRASTRUCTURE == set(CONTAINERISED)


@pytest.mark.parametrize("name", sorted(CONTAINERISED))
def test_compose_agrees_with_the_manifest(name):
    strategy, service = CONTAINERISED[name], COMPOSE[name]
    docker = strategy.docker
    assert docker is not None
    assert service["image"] == docker.image
    assert service["ports"] == [f"{strategy.port}:{strategy.port}"]
    assert ROOT / service["build"]["dockerfile"] == docker.dockerfile
    assert service["build"].get("target") == docker.target
    model_uri = compose_default(service["environment"]["MODEL_URI"])
    assert model_uri == f"gs://models/weather/{strategy.model_file}"


@pytest.mark.parametrize("name", sorted(CONTAINERISED))
def test_compose_restarts_limits_memory_and_outwaits_the_drain(name):
    service = COMPOSE[name]
    assert service["restart"] == "unless-stopped"
    assert re.fullmatch(r"\d+[mg]", compose_default(service["mem_limit"]))
    assert int(service["stop_grace_period"].removesuffix("s")) > DRAIN_SECONDS


def test_no_compose_file_passes_a_token_in_the_environment():
    for path in ROOT.glob("docker-compose*.yml"):
        assert "CLOUDSDK_AUTH_ACCESS_TOKEN:" not in path.read_text(), path.name


@pytest.mark.parametrize("name", sorted(CONTAINERISED))
def test_dockerfile_exposes_the_manifest_port(name):
    strategy = CONTAINERISED[name]
    assert strategy.docker is not None
    text = strategy.docker.dockerfile.read_text()
    if re.search(r"^EXPOSE \$\{PORT\}$", text, re.M):
        # The shared Python service Dockerfile: the port is a build argument, Compose's.
        assert COMPOSE[name]["build"]["args"]["PORT"] == str(strategy.port)
        assert re.findall(r"^\s*PORT=(\S+)", text, re.M) == ["${PORT}"]
        return
    assert re.findall(r"^EXPOSE (\d+)", text, re.M) == [str(strategy.port)]
    assert re.findall(r"\bPORT=(\d+)", text) == [str(strategy.port)]


def test_readme_strategy_table_is_rendered_from_the_manifests():
    readme = (ROOT / "README.md").read_text()
    section = readme.split(STRATEGIES_START)[1].split(STRATEGIES_END)[0]
    assert section.strip() == render_strategies(OWN)


def test_contract_readme_error_table_is_errors_json():
    errors = json.loads((ROOT / "contract" / "errors.json").read_text())
    readme = (ROOT / "contract" / "README.md").read_text()
    # Error types are lower case; the configuration table's variables, upper case.
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (\d{3}) \| (.+?) \|$", readme, re.M)
    assert [(error_type, int(status)) for error_type, status, _ in rows] == [
        (error_type, row["status"]) for error_type, row in errors.items()
    ]
    for error_type, _, when in rows:
        assert when.replace("`", "") == errors[error_type]["when"], error_type


def test_contract_readme_names_every_metadata_field(artifacts):
    """The table of "The model's contract" against what an export writes: every field of
    metadata.json (those of "preprocessing" one by one), and nothing else."""
    metadata = json.loads((artifacts / "metadata.json").read_text())
    written = {key for key in metadata if key != "preprocessing"}
    written |= {f"preprocessing.{key}" for key in metadata["preprocessing"]}
    readme = (ROOT / "contract" / "README.md").read_text()
    section = readme.split("## The model's contract")[1].split("\n## ")[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.M)
    named = {name for cell in first_cells for name in re.findall(r"`([\w.]+)`", cell)}
    assert named == written


def test_makefile_exports_the_default_network_where_the_harness_reads_it():
    """The Makefile names the default network (Make cannot ask Python cheaply); the registry
    is the source, and the harness's default folder is built from it."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"^DEFAULT_MODEL := (\S+)$", makefile, re.M) == [DEFAULT_ARCHITECTURE]
    assert re.findall(r"^ARTIFACTS := (\S+)$", makefile, re.M) == [f"{ARTIFACTS_ROOT}/$(MODEL)"]
    assert HARNESS_ARTIFACTS == ROOT / ARTIFACTS_ROOT / DEFAULT_ARCHITECTURE


def test_onnxruntime_and_uv_are_pinned_once():
    manifests = [ROOT / "pyproject.toml", *ROOT.glob("*/pyproject.toml")]
    pins = [p for p in manifests if re.search(r'"onnxruntime==', p.read_text())]
    assert [p.relative_to(ROOT).as_posix() for p in pins] == ["model/pyproject.toml"]
    uv = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["required-version"]
    version = uv.removeprefix("==")
    builds = [ROOT / "Makefile", *ROOT.glob("*/Dockerfile"), *ROOT.glob("docker/*")]
    assert [p.name for p in builds if version in p.read_text()] == []


def test_a_bad_manifest_is_refused_with_the_fix(tmp_path):
    folder = tmp_path / "broken_serving"
    folder.mkdir()
    (folder / "strategy.toml").write_text(
        'name = "broken_serving"\ntitle = "t"\nstack = "s"\nport = 8090\n'
        'model = "model.onnx"\nrun = ["python", "-m", "broken_serving"]\n'
    )
    with pytest.raises(ManifestError, match="OPTIMIZED_ONNX_FILE"):
        load_strategy(folder)
    (folder / "strategy.toml").write_text(
        'name = "other"\ntitle = "t"\nstack = "s"\nport = 8090\n'
        'model = "ONNX_FILE"\nrun = ["python"]\n'
    )
    with pytest.raises(ManifestError, match="folder is 'broken_serving'"):
        load_strategy(folder)
    (folder / "strategy.toml").write_text(
        'name = "broken_serving"\ntitle = "t"\nstack = "s"\nport = 8090\n'
        'model = "ONNX_FILE"\nrun = ["python"]\n[variants.batched]\nMAX_BATCH_SIZE = 8\n'
    )
    with pytest.raises(ManifestError, match="tables of environment strings"):
        load_strategy(folder)
    (folder / "strategy.toml").write_text(
        'name = "broken_serving"\ntitle = "t"\nstack = "s"\nport = 8090\n'
        'model = "ONNX_FILE"\nrun = ["python"]\ningress_continues = "yes"\n'
    )
    with pytest.raises(ManifestError, match="`ingress_continues` must be true or false"):
        load_strategy(folder)


def test_a_framework_is_set_against_the_strategy_hosting_its_predictor_without_one(tmp_path):
    def manifest(name: str, port: int, extra: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "strategy.toml").write_text(
            f'name = "{name}"\ntitle = "t"\nstack = "s"\nport = {port}\n'
            f'model = "ONNX_FILE"\nrun = ["python"]\n{extra}'
        )

    manifest("framed_serving", 8090, 'framework = "Frame"\npredictor = "p.m:P"\n')
    assert load_strategy(tmp_path / "framed_serving").framework == "Frame"
    with pytest.raises(ManifestError, match=r"hosting p.m:P without a framework .*found \[\]"):
        framework_hosts(discover_strategies([tmp_path]))
    manifest("plain_serving", 8091, 'predictor = "p.m:P"\n')
    assert framework_hosts(discover_strategies([tmp_path])) == {"framed_serving": "plain_serving"}
    manifest("twin_serving", 8092, 'predictor = "p.m:P"\n')
    with pytest.raises(ManifestError, match="found \\['plain_serving', 'twin_serving'\\]"):
        framework_hosts(discover_strategies([tmp_path]))
    manifest("bare_serving", 8093, 'framework = "Frame"\n')
    with pytest.raises(ManifestError, match="`framework` needs `predictor`"):
        load_strategy(tmp_path / "bare_serving")


def test_every_framework_strategy_has_its_host():
    hosts = framework_hosts(OWN)
    assert set(hosts) == {s.name for s in OWN.values() if s.framework is not None} != set()
    for framework, host in hosts.items():
        assert OWN[host].framework is None and OWN[host].predictor == OWN[framework].predictor


def test_rendered_files_are_up_to_date():
    """`make render`'s outputs, committed, equal a fresh render: each renderer's --check,
    run as `make render` runs it (the standard library and the source tree only)."""
    renderers = (
        ["scripts/workspace_members.py"],
        ["docker/compose_files.py"],
        ["-m", "serving_common.render_errors"],
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": "model:serving_common"}
    for renderer in renderers:
        result = subprocess.run(
            ["python3", *renderer, "--check"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{renderer}: {result.stderr}"
