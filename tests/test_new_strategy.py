"""Adding a strategy is adding a folder: a throwaway one, outside the repository, is found
by the contract suite and by the harness with no edit anywhere else."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from serving_common.strategy import EXTRA_DIRS_ENV

from conftest import ROOT

NAME = "copy_serving"


@pytest.fixture(scope="module")
def strategy_dir(tmp_path_factory) -> Path:
    """`copy_serving/`: the ONNX predictor under another name and port."""
    base = tmp_path_factory.mktemp("strategies")
    folder = base / NAME
    (folder / NAME).mkdir(parents=True)
    (folder / "strategy.toml").write_text(
        textwrap.dedent(f"""\
            name = "{NAME}"
            title = "ONNX Runtime, Python, under another name"
            stack = "FastAPI + ONNX Runtime (the onnx_serving predictor)"
            port = 8099
            model = "OPTIMIZED_ONNX_FILE"
            run = ["python", "-m", "{NAME}"]
            predictor = "onnx_serving.predictor:OnnxPredictor"
            """)
    )
    (folder / NAME / "__init__.py").write_text("")
    (folder / NAME / "__main__.py").write_text(
        textwrap.dedent("""\
            from pathlib import Path

            from serving_common.serve import run_service

            run_service(Path(__file__).resolve().parents[1])
            """)
    )
    return base


def run(command: list[str], strategy_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, EXTRA_DIRS_ENV: str(strategy_dir)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_the_contract_suite_runs_against_it(strategy_dir):
    command = [sys.executable, "-m", "pytest", "tests/test_contract.py", "-k", NAME]
    result = run([*command, "-q", "-p", "no:cacheprovider", "-rA"], strategy_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = [line for line in result.stdout.splitlines() if line.startswith("PASSED")]
    assert len(passed) >= 25 and all(NAME in line for line in passed), result.stdout[-3000:]


def test_the_harness_measures_it(strategy_dir, artifacts, tmp_path):
    command = [sys.executable, "-m", "benchmark.runner", "--plan", "quick", "--services", NAME]
    result = run([*command, "--out", str(tmp_path), "--artifacts", str(artifacts)], strategy_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    record = json.loads((tmp_path / "native-quick.json").read_text())
    assert list(record["services"]) == [NAME]
    assert record["strategies"][NAME]["port"] == 8099
    service = record["services"][NAME]
    assert service["main"]["ab"]["non_2xx"] == 0 and service["main"]["ab"]["complete_requests"] > 0
    assert service["runtime"]["runtime"] == "onnxruntime"
