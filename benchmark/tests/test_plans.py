"""Plans, progress, machine names and docker stats parsing: the harness's small parts."""

import time
from dataclasses import replace

import pytest
from benchmark.machine import machine_name
from benchmark.measure import offered_rates
from benchmark.modes import configurations
from benchmark.plans import PLANS, plan_phases
from benchmark.progress import Phase, Progress, clock
from benchmark.resources import parse_docker_size
from serving_common.strategy import discover_strategies, load_strategy


def test_machine_names_say_cpu_cores_os_and_arch():
    def name(cpu: str, cores: int, os: str, arch: str) -> str:
        return machine_name({"cpu_model": cpu, "cpus_online": cores, "os": os, "arch": arch})

    assert name("Apple M2 Max", 12, "darwin", "arm64") == "apple-m2-max-12-cores-darwin-arm64"
    intel = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert name(intel, 8, "linux", "x86_64") == "intel-xeon-platinum-8375c-8-cores-linux-x86_64"
    assert name("AMD EPYC", 2, "linux", "x86_64") == "amd-epyc-2-cores-linux-x86_64"


def test_the_short_plan_takes_about_a_minute_and_a_half_per_configuration():
    """What the plan allots, for today's strategies and their variants; `make bench SHORT=1`
    measured about five minutes for the first three strategies."""
    names = [key for key, _, _ in configurations(discover_strategies())]
    short = sum(p.planned_s for p in plan_phases(PLANS["short"], "native", names))
    full = sum(p.planned_s for p in plan_phases(PLANS["full"], "native", names))
    assert 60 <= short / len(names) <= 120, short
    assert full > 4 * short


def test_each_strategy_then_its_variants_is_measured():
    # Any real manifest, under another name and with no variant of its own.
    folder = next(iter(discover_strategies().values())).folder
    plain = replace(load_strategy(folder), name="a", variants={})
    batched = replace(plain, name="b", variants={"batched": {"MAX_BATCH_SIZE": "8"}})
    assert configurations({"a": plain, "b": batched}) == [
        ("a", plain, {}),
        ("b", batched, {}),
        ("b+batched", batched, {"MAX_BATCH_SIZE": "8"}),
    ]


def test_a_variant_is_offered_its_base_configurations_rates_too():
    assert offered_rates([100.0], (0.5, 1.0)) == [50, 100]
    assert offered_rates([130.0, 100.0], (0.5, 1.0)) == [50, 65, 100, 130]
    assert offered_rates([1.0], (0.1,)) == [1]


def test_progress_estimates_what_is_left_from_the_phases_done():
    lines: list[str] = []
    progress = Progress([Phase("a", 10.0), Phase("b", 20.0)], lines.append, heartbeat=0.05)
    assert progress.left_s() == 30.0
    with progress.phase("a"):
        time.sleep(0.2)
    # "a" took 2% of its plan: "b" is expected faster than planned, by at most the floor.
    assert progress.left_s() == pytest.approx(20.0 * 0.3)
    with progress.phase("unplanned retry"):
        pass
    with progress.phase("b"):
        pass
    assert progress.left_s() == 0
    assert lines[0].startswith("[+0:00, phase 1/2, about 0:30 left] a")
    assert any(line.endswith("a: 0:00 of about 0:10") for line in lines[1:3]), lines
    assert "phase 2/2" in lines[-1] and not any("\r" in line for line in lines)
    assert clock(3725) == "1:02:05" and clock(65) == "1:05"


def test_docker_stats_sizes():
    assert parse_docker_size("123.5MiB") == 123.5
    assert parse_docker_size("1.5GiB ") == 1536
    assert parse_docker_size("512kB") == pytest.approx(512e3 / 2**20)
    with pytest.raises(ValueError):
        parse_docker_size("12 parsecs")
