"""Tables that set one configuration against another of the same record, round by round
(benchmark.metrics' spreads): what a variant changes against its strategy's default, what a
framework costs against the strategy hosting the same predictor without one. Nothing here
measures."""

from benchmark.metrics import (
    ServiceRecord,
    change_spread,
    derive,
    derive_rounds,
    difference_spread,
    slo_ms,
)
from benchmark.tables import DEFAULT_SLO_MS, ms, rounds_note, spread_text, with_spread


def variant_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Each variant ("<strategy>+<variant>") beside its strategy's default configuration,
    where both were measured."""
    return [
        (name, name.split("+")[0]) for name in names if "+" in name and name.split("+")[0] in names
    ]


def render_variant_effects(record: ServiceRecord) -> str:
    """What each variant (a manifest's `[variants]` or the runner's `--variant`: dynamic
    batching, a window, a thread count) changes against its strategy's default
    configuration; empty when the record has no variant."""
    rows, rounds = derive(record), derive_rounds(record)
    pairs = variant_pairs(list(rows))
    if not pairs:
        return ""
    lines = [
        "What a variant changes against its strategy's default configuration (the environment "
        "it adds in the second column), from the same record:",
        *rounds_note(rows),
        "",
        "| configuration | adds | requests/s per core | difference | p99 ms at 80% of its own "
        "capacity | default's | per core within the p99 bound | default's "
        "| requests per inference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, default in pairs:
        r, d = rows[name], rows[default]
        adds = ", ".join(f"{k}={v}" for k, v in record["strategies"][name]["environment"].items())
        batch = f"{r['mean_batch']:.2f}" if r["mean_batch"] is not None else "-"
        faster = change_spread(rounds, name, default, "rps_per_core")
        lines.append(
            f"| {name} | {adds or '-'} | {with_spread(r, 'rps_per_core', '.1f')} | "
            f"{spread_text(faster, '+.0%', judged=True)} | "
            f"{with_spread(r, 'p99_at_80_ms', '.0f')} | {with_spread(d, 'p99_at_80_ms', '.0f')} | "
            f"{with_spread(r, 'bounded_per_core', '.1f')} | "
            f"{with_spread(d, 'bounded_per_core', '.1f')} | {batch} |"
        )
    return "\n".join(lines)


def render_framework_costs(record: ServiceRecord, framework_over: dict[str, str]) -> str:
    """Each framework configuration against the strategy hosting the same predictor
    without a framework (`framework_over`: strategy name -> that strategy, from the
    manifests), both from `record`; empty when the record has no such pair."""
    rows, rounds = derive(record), derive_rounds(record)
    pairs = [
        (name, framework_over[name.split("+")[0]])
        for name in rows
        if framework_over.get(name.split("+")[0]) in rows
    ]
    if not pairs:
        return ""
    slo = slo_ms(record, DEFAULT_SLO_MS)
    lines = [
        "What a framework costs: each framework configuration against the strategy that hosts "
        "the same predictor without one, from the same record (the differences are the "
        "framework's; `+batched`: its dynamic batching on). Efficiency is against each "
        "service's own ceiling, timed around it: where the machine's speed drifts during a "
        "run, compare efficiencies rather than requests/s.",
        *rounds_note(rows),
        "",
        "| configuration | against | requests/s per core | difference | efficiency "
        f"| CPU ms/request | difference | p99 ms at 80% of its own capacity "
        f"| per core at p99 ≤ {slo:.0f} ms | RSS MB | ratio | start s | requests per inference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, host in pairs:
        r, h = rows[name], rows[host]
        batch = f"{r['mean_batch']:.2f}" if r["mean_batch"] is not None else "-"
        faster = change_spread(rounds, name, host, "rps_per_core")
        costlier = difference_spread(rounds, name, host, "cpu_ms_per_request")
        lines.append(
            f"| {name} | {host} | {with_spread(r, 'rps_per_core', '.1f')} | "
            f"{spread_text(faster, '+.0%', judged=True)} | "
            f"{r['efficiency']:.0%} (host {h['efficiency']:.0%}) | "
            f"{with_spread(r, 'cpu_ms_per_request', '.1f')} | "
            f"{spread_text(costlier, '+.1f', judged=True)} | "
            f"{ms(r['p99_at_80_ms'])} (host {ms(h['p99_at_80_ms'])}) | "
            f"{r['bounded_per_core']:.1f} (host {h['bounded_per_core']:.1f}) | "
            f"{r['rss_mb_mean']:.0f} | {r['rss_mb_mean'] / h['rss_mb_mean']:.1f}x | "
            f"{r['ready_s']:.1f} | {batch} |"
        )
    return "\n".join(lines)
