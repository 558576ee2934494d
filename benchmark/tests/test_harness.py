"""The harness: ab output parsing on a recorded report, and a quick end-to-end run."""

import json
import subprocess
import sys

from benchmark.ab import ab_command, parse_ab
from benchmark.report import END, START, derive, plot_results, render_readme, render_tables
from serving_common.strategy import discover_strategies

RECORDED_AB = """\
Benchmarking 127.0.0.1 (be patient).....done

Server Software:        uvicorn
Document Path:          /predict/
Document Length:        19 bytes

Concurrency Level:      50
Time taken for tests:   156.535 seconds
Complete requests:      40000
Failed requests:        1893
   (Connect: 0, Receive: 0, Length: 1893, Exceptions: 0)
Non-2xx responses:      3
Total transferred:      5893107 bytes
Total body sent:        12250440000
HTML transferred:       773107 bytes
Requests per second:    255.53 [#/sec] (mean)
Time per request:       195.669 [ms] (mean)
Time per request:       3.913 [ms] (mean, across all concurrent requests)

Percentage of the requests served within a certain time (ms)
  50%    195
  66%    197
  75%    199
  80%    200
  90%    204
  95%    209
  98%    217
  99%    226
 100%    412 (longest request)
"""


def test_parse_ab_recorded_output():
    parsed = parse_ab(RECORDED_AB)
    assert parsed["requests_per_second"] == 255.53
    assert parsed["time_per_request_ms"] == 195.669
    assert parsed["complete_requests"] == 40000
    assert parsed["non_2xx"] == 3  # length "failures" are not errors
    assert (parsed["p50_ms"], parsed["p90_ms"], parsed["p99_ms"], parsed["p100_ms"]) == (
        195,
        204,
        226,
        412,
    )


def test_parse_ab_rejects_other_text():
    try:
        parse_ab("ab: invalid option")
    except ValueError:
        return
    raise AssertionError("parse_ab accepted a non-report")


def test_ab_command_matches_the_study():
    command = ab_command("http://h/predict/", "p.json", 40000, 50, 180, "application/json")
    assert command[command.index("-n") + 1] == "40000"
    assert command[command.index("-c") + 1] == "50"
    assert command[command.index("-s") + 1] == "3600"
    assert command[command.index("-T") + 1] == "application/json"
    assert command.index("-t") < command.index("-n")  # -t after -n would reset -n to 50000


def test_quick_run_end_to_end(tmp_path, artifacts):
    """Runner (real services, real ab, GCS emulator) then reporter, in quick mode."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.runner",
            "--quick",
            "--out",
            str(tmp_path),
            "--artifacts",
            str(artifacts),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "native-quick.json").read_text())
    assert record["machine"]["git_commit"] and record["machine"]["service_cpus"] == "0"
    assert record["ceiling"]["requests_per_second"] > 0
    rows = derive(record)
    assert set(rows) == set(discover_strategies()) == set(record["strategies"])
    for name, row in rows.items():
        assert row["requests"] >= 100 and row["non_2xx"] == 0, name
        assert row["efficiency"] > 0 and row["rss_mb_peak"] > 50 and row["ready_s"] > 0
        adjacent = record["services"][name]["ceiling"]
        assert row["ceiling_ms"] == adjacent["cpu_ms_per_request"] > 0
        assert len(adjacent["runs"]) == 2  # before and after the main run
        assert row["cpu_vs_ceiling"] == row["cpu_ms_per_request"] / row["ceiling_ms"]
        main = record["services"][name]["main"]
        assert main["resources"]["samples"] >= 2 and len(main["payload_sha256"]) == 64
        assert record["services"][name]["runtime"]["decoder"], name
        (step,) = record["services"][name]["open_loop"]["steps"]
        assert step["ok"] > 0 and step["p99_ms"] > 0, step
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\ntail\n")
    render_readme(readme, render_tables(record))
    plots = plot_results(record, tmp_path / "plots")
    assert all(p.stat().st_size > 5_000 for p in plots)
    text = readme.read_text()
    assert "old" not in text and "| onnx_serving |" in text and text.endswith("tail\n")


def test_parse_oha_recorded_output():
    from pathlib import Path

    from benchmark.oha import parse_oha

    parsed = parse_oha((Path(__file__).parent / "oha_recorded.json").read_text())
    assert parsed["ok"] == 200 and parsed["non_2xx"] == 0 and parsed["errors"] == 0
    assert round(parsed["achieved_rps"], 2) == 39.98
    assert round(parsed["p99_ms"], 2) == 16.63 and parsed["p50_ms"] < parsed["p90_ms"]


def test_latency_bounded_throughput_picks_the_best_rate_within_the_slo():
    from benchmark.report import latency_bounded_rps

    def step(rate, p99, non_2xx=0):
        return {"achieved_rps": rate, "p99_ms": p99, "non_2xx": non_2xx, "errors": 0}

    open_loop = {
        "slo_ms": 100,
        "steps": [step(40, 20), step(60, 80), step(70, 99, non_2xx=1), step(80, 400)],
    }
    assert latency_bounded_rps(open_loop) == 60
    assert latency_bounded_rps({"slo_ms": 100, "steps": [step(40, 200)]}) == 0.0


def test_cpu_lists_read_like_taskset():
    from benchmark.ceiling import parse_cpu_list

    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list("0,2") == {0, 2}
    assert parse_cpu_list("1-3,5") == {1, 2, 3, 5}


def test_mean_ceiling_weighs_runs_by_iterations():
    from benchmark.ceiling import mean_ceiling

    fast = {"iterations": 300, "seconds": 3.0, "cpu_ms_per_request": 10.0}
    slow = {"iterations": 100, "seconds": 2.0, "cpu_ms_per_request": 20.0}
    both = mean_ceiling([fast, slow])
    assert both["requests_per_second"] == 80.0
    assert both["cpu_ms_per_request"] == 12.5
    assert both["runs"] == [fast, slow]
