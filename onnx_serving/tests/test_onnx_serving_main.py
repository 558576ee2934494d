"""`python -m onnx_serving`: a RESIZER the host cannot run stops startup with one line."""

import os
import subprocess
import sys

from benchmark.processes import free_port
from helpers import STRATEGIES
from weather_model.contract import FIXED_ONNX_FILE

# Run with cykooz-resizer made unimportable (a None entry in sys.modules is how Python
# spells "no such module"), as on Linux arm64 where it has no wheel.
WITHOUT_SIMD = "import sys; sys.modules['cykooz_resizer'] = None\n"


def run_without_simd(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SIMD + code],
        cwd=STRATEGIES["onnx_serving"].folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_simd_resizer_without_cykooz_stops_startup_with_one_line(artifacts):
    env = {
        "MODEL_URI": str(artifacts / FIXED_ONNX_FILE),
        "RESIZER": "simd",
        "PORT": str(free_port()),
    }
    result = run_without_simd(
        "import runpy; runpy.run_module('onnx_serving', run_name='__main__')", env
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("onnx_serving: fatal: RESIZER=simd: cykooz-resizer cannot be imported")
    assert last.endswith("set RESIZER=pillow")
    assert "Traceback" not in result.stderr
