"""Plans, progress, machine names and docker stats parsing: the harness's small parts."""

import time
from dataclasses import replace
from itertools import product

import pytest
from benchmark.machine import machine_name
from benchmark.measure import offered_rates
from benchmark.modes import configurations, with_sweep, with_variants
from benchmark.plans import PLANS, plan_phases
from benchmark.progress import Phase, Progress, clock
from benchmark.resources import parse_docker_size
from serving_common.strategy import ManifestError, discover_strategies, load_strategy


def test_machine_names_say_cpu_cores_os_and_arch():
    def name(cpu: str, cores: int, os: str, arch: str) -> str:
        return machine_name({"cpu_model": cpu, "cpus_online": cores, "os": os, "arch": arch})

    assert name("Apple M2 Max", 12, "darwin", "arm64") == "apple-m2-max-12-cores-darwin-arm64"
    intel = "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert name(intel, 8, "linux", "x86_64") == "intel-xeon-platinum-8375c-8-cores-linux-x86_64"
    assert name("AMD EPYC", 2, "linux", "x86_64") == "amd-epyc-2-cores-linux-x86_64"


def test_the_plans_fit_their_budgets():
    """What each plan allots, for today's strategies and their variants: the short plan a
    first look in minutes, the full plan three rounds within about an hour for today's
    nine configurations, the overload phase included."""
    names = [key for key, _, _ in configurations(discover_strategies())]
    short = sum(p.planned_s for p in plan_phases(PLANS["short"], "native", names))
    full = sum(p.planned_s for p in plan_phases(PLANS["full"], "native", names))
    assert 30 <= short / len(names) <= 60, short
    assert PLANS["full"].rounds >= 3 and PLANS["short"].rounds == 1
    assert 5 * short < full <= 7 * 60 * len(names), full


def test_the_overload_plan_measures_the_overload_phase_alone():
    """Each strategy's default configuration, three rounds, no open loop below capacity:
    within 40 minutes for today's six strategies."""
    defaults = sorted(discover_strategies())
    phases = plan_phases(PLANS["overload"], "native", defaults)
    steps = {p.label.split(": ")[1].split(" (")[0] for p in phases if ": " in p.label}
    assert "overload" in steps and "open loop" not in steps and "size sweep" not in steps
    assert PLANS["overload"].rounds >= 3
    assert sum(p.planned_s for p in phases) <= 40 * 60


def test_rounds_are_interleaved_each_configuration_once_then_each_again():
    plan = replace(PLANS["full"], rounds=2)
    mains = [p.label for p in plan_phases(plan, "native", ["a", "b"]) if "main run" in p.label]
    assert mains == [
        "a: main run (round 1/2)",
        "b: main run (round 1/2)",
        "a: main run (round 2/2)",
        "b: main run (round 2/2)",
    ]
    labels = [p.label for p in plan_phases(plan, "native", ["a"])]
    # The size sweep and the extra cold starts in the first round only.
    assert [label for label in labels if "sweep" in label] == ["a: size sweep (round 1/2)"]
    assert not any("round" in p.label for p in plan_phases(PLANS["short"], "native", ["a"]))


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


def test_open_loop_rates_are_whole_fractions_of_the_closed_loop_throughput():
    assert offered_rates(100.0, (0.5, 1.0)) == [50, 100]
    assert offered_rates(130.4, (0.5, 0.8, 1.0)) == [65, 104, 130]
    assert offered_rates(1.0, (0.1, 0.2)) == [1]


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


def test_the_command_line_adds_variants_to_a_strategys_own():
    strategies = discover_strategies()
    name, strategy = next((n, s) for n, s in strategies.items() if s.variants)
    spec = f"{name}+b16:MAX_BATCH_SIZE=16,BATCH_WAIT_MS=10"
    added = with_variants(strategies, [spec])
    keys = [key for key, _, _ in configurations(added)]
    assert keys[keys.index(name) : keys.index(name) + len(strategy.variants) + 2] == [
        name,
        *(f"{name}+{v}" for v in strategy.variants),
        f"{name}+b16",
    ]
    assert added[name].variants["b16"] == {"MAX_BATCH_SIZE": "16", "BATCH_WAIT_MS": "10"}
    assert strategies[name].variants == strategy.variants  # the manifest's left as it was
    for bad, says in [
        (f"{name}:MAX_BATCH_SIZE=16", "expected <strategy>"),
        (f"{name}+b16", "expected <strategy>"),
        (f"{name}+b16:MAX_BATCH_SIZE", "expected <strategy>"),
        ("nothing_serving+b16:A=1", "nothing_serving is not measured"),
        (f"{name}+{next(iter(strategy.variants))}:A=1", "already has a variant"),
    ]:
        with pytest.raises(RuntimeError, match=says):
            with_variants(strategies, [bad])


def test_a_sweep_adds_every_combination_its_manifests_declare():
    strategies = discover_strategies()
    declaring = {n: s for n, s in strategies.items() if "batching" in s.sweeps}
    assert declaring, "a strategy declares [sweeps.batching]"
    swept = with_sweep(strategies, "batching")
    for name, strategy in declaring.items():
        grid = strategy.sweeps["batching"]
        environments = list(swept[name].variants.values())
        for values in product(*grid.values()):
            # Once, whether added or a variant the manifest already had.
            assert environments.count(dict(zip(grid, values, strict=True))) == 1, values
        added = {k: v for k, v in swept[name].variants.items() if k not in strategy.variants}
        assert added, name
        assert all(key == "-".join(["batching", *env.values()]) for key, env in added.items())
        assert all(swept[name].variants[k] == v for k, v in strategy.variants.items())
    # A strategy without the grid is measured as it was; a grid nobody declares is an error.
    assert all(swept[n] == s for n, s in strategies.items() if n not in declaring)
    with pytest.raises(RuntimeError, match=r"declares \[sweeps.nothing\]"):
        with_sweep(strategies, "nothing")


def test_a_manifest_sweep_is_lists_of_environment_strings(tmp_path):
    folder = next(iter(discover_strategies().values())).folder
    manifest = (folder / "strategy.toml").read_text()
    copy = tmp_path / folder.name
    copy.mkdir()
    for grid in ['MAX_BATCH_SIZE = "4"', "MAX_BATCH_SIZE = []", "MAX_BATCH_SIZE = [4]"]:
        (copy / "strategy.toml").write_text(f"{manifest}\n[sweeps.bad]\n{grid}\n")
        with pytest.raises(ManifestError, match=r"\[sweeps.NAME\]"):
            load_strategy(copy)
    (copy / "strategy.toml").write_text(f'{manifest}\n[sweeps.good]\nA = ["1", "2"]\n')
    assert load_strategy(copy).sweeps["good"] == {"A": ("1", "2")}
