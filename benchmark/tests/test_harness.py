"""The harness: ab output parsing on a recorded report, and a quick end-to-end run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark.ab import ab_command, parse_ab
from benchmark.machine import machine_name
from benchmark.metrics import derive
from benchmark.plots import plot_results
from benchmark.record import SCHEMA_VERSION, load_record
from benchmark.report import END, START, render_block, render_results
from benchmark.run_record import added_to, model_info
from benchmark.tables import measured, render_cluster, render_tables
from helpers import compiled, plain_hosts
from serving_common.strategy import discover_strategies, framework_hosts

# A strategy every run measures, for its row in the tables.
MEASURED = plain_hosts()[0].name

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


def test_parse_ab_counts_requests_that_got_no_answer():
    flood = RECORDED_AB.replace(
        "   (Connect: 0, Receive: 0, Length: 1893, Exceptions: 0)",
        "   (Connect: 1, Receive: 3, Length: 1886, Exceptions: 2)\nWrite errors:           4",
    )
    assert parse_ab(flood)["connection_errors"] == 10
    assert parse_ab(RECORDED_AB)["connection_errors"] == 0


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


def run_quick(out: Path, artifacts: Path, *extra: str, path: str | None = None) -> tuple[dict, str]:
    """The runner's quick plan for real (services, ab, oha, GCS emulator): its record, read
    as the report reads it (benchmark.record), and its log."""
    command = [sys.executable, "-m", "benchmark.runner", "--plan", "quick", "--out", str(out)]
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    command += ["--artifacts", str(artifacts), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    written = out / "native-quick.json"
    assert json.loads(written.read_text())["schema_version"] == SCHEMA_VERSION
    return load_record(written), result.stdout


# One configuration the run adds (--variant) to the quickest service's, instead of the
# manifests' variants (--no-variants): a variant's path through the harness, once.
VARIANT, VARIANT_SETTING = f"{compiled()[0].name}+simd", ("RESIZER", "simd")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, artifacts) -> tuple[dict, str]:
    variant = f"--variant={VARIANT}:{'='.join(VARIANT_SETTING)}"
    return run_quick(tmp_path_factory.mktemp("quick"), artifacts, "--no-variants", variant)


@pytest.fixture(scope="module")
def quick_record(quick_run) -> dict:
    return quick_run[0]


def test_quick_run_end_to_end(quick_record, artifacts, tmp_path):
    """Runner (real services, real ab, GCS emulator) then reporter, in quick mode."""
    record = quick_record
    assert record["model"] == model_info(artifacts)  # the exported model it measured
    assert record["machine"]["git_commit"] and record["machine"]["service_cpus"] == "0"
    assert record["plan_name"] == "quick" and record["machine"]["warnings"] == []
    assert record["ceiling"]["requests_per_second"] > 0
    rows = derive(record)
    assert set(rows) == {*discover_strategies(), VARIANT} == set(record["strategies"])
    # The variant's environment reached its service (/info).
    pipeline = record["services"][VARIANT]["runtime"]["pipeline"]
    assert pipeline["resizer_setting"] == VARIANT_SETTING[1], pipeline
    per_core = [row["rps_per_core"] for row in rows.values()]
    assert per_core == sorted(per_core, reverse=True)  # the tables' order
    for name, row in rows.items():
        assert row["requests"] >= 100 and row["non_2xx"] == 0, name
        assert row["efficiency"] > 0 and row["rss_mb_peak"] > 50 and row["ready_s"] > 0
        adjacent = record["services"][name]["ceiling"]
        assert row["ceiling_ms"] == adjacent["cpu_ms_per_request"] > 0
        assert len(adjacent["runs"]) == 2  # before and after the main run
        assert row["cpu_vs_ceiling"] == row["cpu_ms_per_request"] / row["ceiling_ms"]
        main = record["services"][name]["main"]
        assert main["resources"]["samples"] >= 2 and len(main["payload_sha256"]) == 64
        assert main["resources"]["method"] == "psutil process tree"
        assert record["services"][name]["runtime"]["decoder"], name
        # One rate: the plan's one fraction of its own closed-loop throughput.
        steps = record["services"][name]["open_loop"]["steps"]
        assert len(steps) == 1, steps
        assert all(step["ok"] > 0 and step["p99_ms"] > 0 for step in steps), steps
        # Past capacity: a strategy's default configuration, not a variant.
        overload = record["services"][name].get("overload")
        assert (overload is None) == (name == VARIANT), name
        if overload:
            flood = overload["flood"]
            assert flood["ab"]["complete_requests"] > 0 and flood["health"]["probes"] >= 3
            assert [step["factor"] for step in overload["open_loop"]] == [2.0, 4.0]
            assert all(step["ok"] > 0 for step in overload["open_loop"]), name
            # Its capacity checked before the flood and after each step, every request a 200.
            checks = [check["ab"] for check in overload["capacity_checks"]]
            assert len(checks) == 2 + len(overload["open_loop"]) and all(
                ab["complete_requests"] > 0 and ab["non_2xx"] == 0 for ab in checks
            ), (name, checks)
            # Each window is the plan's, not waited past (benchmark.measure.overload).
            assert all(
                step["seconds"] < record["plan"]["overload_seconds"] + 0.5
                for step in overload["open_loop"]
            ), name
    page = tmp_path / "results.md"
    page.write_text(f"# x\n{START}\nold\n{END}\ntail\n")
    render_block(page, (START, END), render_tables(record, "plots", None))
    plots = plot_results(record, tmp_path / "plots")
    assert all(p.stat().st_size > 5_000 for p in plots)
    text = page.read_text()
    assert "old" not in text and f"| {MEASURED} |" in text and text.endswith("tail\n")
    assert "Quick plan" in text and "(taskset)" in text and "**Past capacity**" in text


def test_progress_says_where_the_run_is(quick_run):
    """Every phase announced in order with what is left; plain lines, no carriage return."""
    record, log = quick_run
    phases = [line for line in log.splitlines() if ", phase " in line]
    services = len(record["services"])
    # The ceiling, then 4 each, and the overload phase of each but the variant.
    assert len(phases) == 1 + 4 * services + (services - 1), log
    assert all("left]" in line for line in phases)
    assert "phase 1/" in phases[0] and f"phase {len(phases)}/{len(phases)}" in phases[-1]
    assert "\r" not in log


@pytest.mark.service  # it runs the harness (conftest.py: tiers)
@pytest.mark.alone  # it loads every core
def test_without_taskset_the_run_says_it_was_not_pinned(tmp_path, artifacts):
    """Where taskset does not exist (macOS), services and load run unpinned, and the raw
    results and the report say so."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for tool in Path(folder).glob("*") if Path(folder).is_dir() else []:
            link = bin_dir / tool.name
            if tool.name != "taskset" and not link.exists():
                link.symlink_to(tool)
    name = compiled()[0].name  # one service, the quickest to start
    record, _ = run_quick(tmp_path, artifacts, "--services", name, path=str(bin_dir))
    (warning,) = record["machine"]["warnings"]
    assert warning.startswith("taskset not found"), warning
    assert derive(record)[name]["requests"] >= 100
    assert "cores not pinned as asked (taskset not found" in render_tables(record, "plots", None)


@pytest.mark.service  # it runs the harness (conftest.py: tiers)
@pytest.mark.alone  # it loads every core
def test_rounds_measure_every_configuration_once_then_each_again(tmp_path, artifacts):
    """`--rounds 2` on two services: A, B, A, B; each measured afresh in its second round
    (started again, its own ceilings, load and open loop), a start sample per round, and
    the tables quote the rounds' median and range."""
    names = [compiled()[0].name, MEASURED]  # the quickest to start
    record, log = run_quick(tmp_path, artifacts, "--services", ",".join(names), "--rounds", "2")
    mains = re.findall(r"\] (\S+): main run \(round (\d)/2\)", log)
    assert mains == [(names[0], "1"), (names[1], "1"), (names[0], "2"), (names[1], "2")], log
    assert record["plan"]["rounds"] == 2
    for name in names:
        result = record["services"][name]
        (repeat,) = result["repeats"]
        assert len(result["startup"]) == 2  # one start per round; the quick plan wants 1
        assert repeat["main"]["ab"]["complete_requests"] >= 100
        assert repeat["ceiling"] != result["ceiling"] and len(repeat["ceiling"]["runs"]) == 2
        assert repeat["open_loop"]["steps"][0]["ok"] > 0 and "predict_" in repeat["stages"]
        row = derive(record)[name]
        assert row["rounds"] == 2 and row["spread"]["rps_per_core"][0] <= row["rps_per_core"]
    assert "the median of 2 rounds, interleaved" in render_tables(record, "plots", None)


def test_report_renders_every_machine(quick_record, tmp_path):
    """Runs from several machines side by side: a summary table, one section each, each
    machine's plots in its own folder; a full run shown in preference to a short one."""
    results = tmp_path / "results"
    apple = {**json.loads(json.dumps(quick_record)), "plan_name": "short"}
    apple["machine"] |= {"cpu_model": "Apple M2 Max", "cpus_online": 12, "os": "darwin"}
    apple["machine"] |= {"arch": "arm64", "warnings": ["taskset not found: ..."]}
    full = {**quick_record, "plan_name": "full"}
    runs = {
        machine_name(quick_record["machine"]): {"native-full": full, "native-short": apple},
        machine_name(apple["machine"]): {"native-short": apple},
    }
    for name, files in runs.items():
        (results / name).mkdir(parents=True)
        for file, record in files.items():
            (results / name / f"{file}.json").write_text(json.dumps(record))
    strategies = discover_strategies()
    text = render_results(results, tmp_path, strategies)
    summary = text.split("\n### ")[0]
    assert summary.count(f"| {MEASURED} |") == 1
    assert "Apple M2 Max, 12 cores, darwin arm64, native (short plan)" in summary
    host = f"{quick_record['machine']['cpu_model']}, {quick_record['machine']['cpus_online']} cores"
    assert f"### {host}" in text and "### Apple M2 Max, 12 cores, darwin arm64" in text
    sections = text.split("\n### ")[1:]
    assert len(sections) == 2
    apple_section = next(s for s in sections if s.startswith("Apple"))
    host_section = next(s for s in sections if not s.startswith("Apple"))
    assert "Short plan" in apple_section and "cores not pinned" in apple_section
    assert "Short plan" not in host_section and "Quick plan" not in host_section  # the full run
    # Each framework configuration beside the strategy hosting the same predictor.
    hosts = framework_hosts(strategies)
    frameworks = [n for n in full["services"] if n.split("+")[0] in hosts]
    assert frameworks and "What a framework costs" in host_section
    for name in frameworks:
        host = hosts[name.split("+")[0]]
        assert re.search(rf"^\| {re.escape(name)} \| {host} \| \d", host_section, re.M), name
    for name in runs:
        assert (results / name / "throughput.png").stat().st_size > 5_000
        assert f"](results/{name}/throughput.png)" in text


def test_a_run_added_to_a_record_keeps_the_others_and_says_which_run_measured_what(
    quick_record, tmp_path
):
    """`--add`: a new strategy measured on its own joins the file's table; a configuration
    measured again replaces its row; a run of another plan is refused."""
    path = tmp_path / "native-quick.json"
    path.write_text(json.dumps(quick_record))
    names = list(quick_record["services"])
    first = next(n for n in names if not any(n in other for other in names if other != n))
    later = json.loads(json.dumps(quick_record))
    later["machine"] |= {"date": "2026-12-01T10:00:00+00:00", "git_commit": "f" * 40}
    later["services"] = {"new_serving": quick_record["services"][first]}
    later["strategies"] = {"new_serving": quick_record["strategies"][first]}
    merged = added_to(path, later)
    assert set(merged["services"]) == {*quick_record["services"], "new_serving"}
    assert [run["services"] for run in merged["runs"]] == [
        list(quick_record["services"]),
        ["new_serving"],
    ]
    text = render_tables(merged, "plots", None)
    assert "in 2 runs" in text and "at commit `ffffffffff` (new_serving;" in text
    assert "| new_serving |" in text
    path.write_text(json.dumps(merged))
    again = json.loads(json.dumps(later))
    again["services"] = {first: quick_record["services"][first]}
    regrown = added_to(path, again)
    assert len(regrown["runs"]) == 3 and set(regrown["services"]) == set(merged["services"])
    assert measured(regrown).count(first) == 1  # only the run that measured it last
    with pytest.raises(RuntimeError, match="plan"):
        added_to(path, {**later, "plan": {**later["plan"], "requests": 1}})


def test_parse_oha_recorded_output():
    from pathlib import Path

    from benchmark.oha import parse_oha

    parsed = parse_oha((Path(__file__).parent / "oha_recorded.json").read_text())
    assert parsed["ok"] == 200 and parsed["non_2xx"] == 0 and parsed["errors"] == 0
    assert round(parsed["achieved_rps"], 2) == 39.98
    assert round(parsed["p99_ms"], 2) == 16.63 and parsed["p50_ms"] < parsed["p90_ms"]


def test_an_overload_window_counts_the_requests_left_at_its_deadline_apart():
    """A real oha run past capacity (onnx_serving on one core, 400 requests/s for 3 s, 300
    connections, without waiting at the deadline): 200s, paced 503s, and the requests still
    in flight at the deadline, which are not errors."""
    from pathlib import Path

    from benchmark.oha import parse_by_status

    parsed = parse_by_status((Path(__file__).parent / "oha_overload_recorded.json").read_text())
    assert (parsed["ok"], parsed["non_2xx"]) == (138, 798)
    assert (parsed["at_deadline"], parsed["errors"]) == (264, 0)
    assert round(parsed["seconds"], 2) == 3.01  # the window, not the last answer's time
    assert round(parsed["ok_p99_ms"]) == 1479 and parsed["ok_p50_ms"] < parsed["ok_p99_ms"]


def test_cpu_lists_read_like_taskset():
    from benchmark.machine import parse_cpu_list

    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list("0,2") == {0, 2}
    assert parse_cpu_list("1-3,5") == {1, 2, 3, 5}


def test_mean_ceiling_weighs_runs_by_iterations():
    from benchmark.ceiling import mean_ceiling

    stages = {"parse": 1.0, "decode": 4.0, "preprocess": 1.0, "inference": 4.0}
    fast = {"pipeline": "simd", "iterations": 300, "seconds": 3.0, "cpu_ms_per_request": 10.0}
    slow = {"pipeline": "simd", "iterations": 100, "seconds": 2.0, "cpu_ms_per_request": 20.0}
    fast["stage_ms"] = stages
    slow["stage_ms"] = {stage: 2 * ms for stage, ms in stages.items()}
    both = mean_ceiling([fast, slow])
    assert both["requests_per_second"] == 80.0
    assert both["cpu_ms_per_request"] == 12.5
    assert both["stage_ms"] == {stage: 1.25 * ms for stage, ms in stages.items()}
    assert both["runs"] == [fast, slow]


CLUSTER_RECORDS = sorted((Path(__file__).resolve().parents[2] / "results").glob("*/cluster-*.json"))


@pytest.mark.parametrize("path", CLUSTER_RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_cluster_records_render(path):
    """Each machine's committed `--mode cluster` record (make bench-cluster) renders: the
    single-node container of a strategy that declares a cluster first, then one row per
    configuration its cluster measured, in order, and the node-loss figures."""
    record = json.loads(path.read_text())
    text = render_cluster(record)
    rows = re.findall(r"^\| ([^|]+?) \| \d", text, re.M)
    single, *cluster = list(record["services"])
    assert rows == [single, *cluster], text
    assert "cluster" in discover_strategies()[single].scenarios
    assert cluster and not set(cluster) & set(discover_strategies()), cluster
    loss = record["node_loss"]
    assert f"{loss['failed']} of {loss['requests']} requests failed" in text
