"""The backend down/up section of ``overhead.py`` and the text and JSON it reports."""

from __future__ import annotations

import argparse
import logging
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datafusion import SessionContext
from opentelemetry.sdk.trace import TracerProvider
from overhead_arms import MIN_DURATION_MS, TINY_SQL, measure, rotated
from overhead_backends import Receiver, SilentListener, refusing_endpoint
from overhead_stats import (
    CPU,
    WALL,
    Sample,
    geomean_of_medians,
    median_ci,
    noisy,
    paired_deltas_ms,
    paired_ratios,
    pct,
    verdict,
)

from datafusion_otel import configure
from datafusion_otel.export import BatchOptions

BACKENDS = ("up", "up_control", "refusing", "silent")
MODES = ("span", "default")
TINY_TARGET_MS = 0.2
BACKEND_TARGET = 1.02


def run_backends(
    ctx: SessionContext, rounds: int, block: int, armed: Callable[..., Any]
) -> dict[str, list[Sample]]:
    """Blocks of the tiny query per (mode, backend), rounds rotated.

    No ``datafusion_otel.force_flush`` inside a measurement (a down backend would make it wait
    its timeout); after every block, untimed, the up backend's exporter is flushed.
    """
    # a down backend is expected here: keep the SDK exporter's retry warnings off stderr
    logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)
    receiver, silent = Receiver(), SilentListener()
    providers: dict[str, TracerProvider] = {}
    try:
        endpoints = {"up": receiver.endpoint, "refusing": refusing_endpoint()}
        endpoints["silent"] = silent.endpoint
        telemetry = {}
        for name, endpoint in endpoints.items():
            provider = TracerProvider()
            batch = BatchOptions(exit_timeout=0.5)
            telemetry[name] = configure(tracer_provider=provider, endpoint=endpoint, batch=batch)
            providers[name] = provider
        providers["up_control"] = providers["up"]
        arms = tuple(f"{mode}/{backend}" for mode in MODES for backend in BACKENDS)
        samples: dict[str, list[Sample]] = {arm: [] for arm in arms}
        for index in range(-1, rounds):
            for arm in rotated(arms, max(index, 0)):
                mode, backend = arm.split("/")
                with armed(mode, providers[backend]) as call:
                    call(ctx, TINY_SQL)
                    sample = measure(call, ctx, TINY_SQL, block, flush=False)
                # untimed, after every block: the receiver's export is not left running into
                # the next arm's block (the down backends' exporters cannot be flushed)
                telemetry["up"].force_flush(10)
                if index >= 0:
                    samples[arm].append(sample)
        return samples
    finally:
        if "up" in providers:
            providers["up"].shutdown()  # delivered while the receiver is still there
        receiver.close()
        silent.close()


def _tpch_section(
    out: list[str],
    res: dict[str, Any],
    samples: dict[str, dict[str, list[Sample]]],
    rng: Any,
    n: int,
) -> dict[str, dict[str, tuple[float, float, float]]]:
    arms = [a for a in next(iter(samples.values())) if a != "plain"]
    head = f"{'query':>6} {'plain ms':>9} " + " ".join(f"{a:>15}" for a in arms)
    out += ["", "Per query: median ratio to plain over the rounds, wall / CPU", head]
    per_query: dict[str, Any] = {}
    for query, by_arm in samples.items():
        plain = by_arm["plain"]
        row = {"plain_wall_ms": statistics.median(s[WALL] for s in plain) / 1e6}
        row["plain_cpu_ms"] = statistics.median(s[CPU] for s in plain) / 1e6
        cells = []
        for arm in arms:
            w = statistics.median(paired_ratios(by_arm[arm], plain, WALL))
            c = statistics.median(paired_ratios(by_arm[arm], plain, CPU))
            row[arm] = {"wall_ratio": w, "cpu_ratio": c}
            cells.append(f"{w:7.3f}/{c:7.3f}")
        per_query[query] = row
        out.append(f"{query:>6} {row['plain_wall_ms']:9.1f} " + " ".join(f"{x:>15}" for x in cells))
    res["tpch_per_query"] = per_query
    geo: dict[str, dict[str, tuple[float, float, float]]] = {}
    pairs = [(a, "plain") for a in arms] + [("full", "naive")]
    for arm, base in pairs:
        key = arm if base == "plain" else f"{arm}/{base}"
        geo[key] = {}
        for label, which in (("wall", WALL), ("cpu", CPU)):
            ratios = [paired_ratios(by[arm], by[base], which) for by in samples.values()]
            geo[key][label] = geomean_of_medians(ratios, n, rng)
    out += ["", "Geometric mean over the queries of the ratio to plain [95 % bootstrap]"]
    for key, figs in geo.items():
        w, c = figs["wall"], figs["cpu"]
        out.append(
            f"  {key:<11} wall {w[0]:.3f} [{w[1]:.3f}, {w[2]:.3f}]   "
            f"CPU {c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]"
        )
    res["tpch_geomean"] = {k: {m: list(v) for m, v in f.items()} for k, f in geo.items()}
    return geo


def _tiny_section(
    out: list[str],
    res: dict[str, Any],
    samples: dict[str, list[Sample]],
    block: int,
    rng: Any,
    n: int,
) -> dict[str, dict[str, tuple[float, float, float]]]:
    plain = samples["plain"]
    plain_ms = statistics.median(s[WALL] for s in plain) / block / 1e6
    plain_cpu = statistics.median(s[CPU] for s in plain) / block / 1e6
    out += [
        "",
        f"Tiny query ({block} calls a block): plain {plain_ms:.3f} ms wall, {plain_cpu:.3f} ms "
        "CPU per call; ms added per call over plain [95 % bootstrap]",
    ]
    added: dict[str, dict[str, tuple[float, float, float]]] = {}
    for arm in (a for a in samples if a != "plain"):
        added[arm] = {}
        for label, which in (("wall", WALL), ("cpu", CPU)):
            added[arm][label] = median_ci(
                paired_deltas_ms(samples[arm], plain, which, block), n, rng
            )
        w, c = added[arm]["wall"], added[arm]["cpu"]
        out.append(
            f"  {arm:<12} wall {w[0]:+.3f} [{w[1]:+.3f}, {w[2]:+.3f}]   "
            f"CPU {c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]"
        )
    res["tiny"] = {"plain_wall_ms": plain_ms, "plain_cpu_ms": plain_cpu, "block": block}
    res["tiny"]["added_ms"] = {k: {m: list(v) for m, v in f.items()} for k, f in added.items()}
    return added


def _backend_section(
    out: list[str],
    res: dict[str, Any],
    samples: dict[str, list[Sample]],
    block: int,
    rng: random.Random,
    n: int,
) -> dict[str, float]:
    out += [
        "",
        f"Backend down vs. up, tiny query ({block} calls a block, no flush in it): median "
        "ratio of wall time to the same mode with the receiver up [95 % bootstrap]",
    ]
    ratios: dict[str, float] = {}
    for mode in MODES:
        up = samples[f"{mode}/up"]
        up_ms = statistics.median(s[WALL] for s in up) / block / 1e6
        cells = [f"up {up_ms:.3f} ms/call"]
        for backend in BACKENDS[1:]:
            paired = paired_ratios(samples[f"{mode}/{backend}"], up, WALL)
            ratio, low, high = median_ci(paired, n, rng)
            ratios[f"{mode}/{backend}"] = ratio
            cells.append(f"{backend} {ratio:.3f} [{low:.3f}, {high:.3f}]")
        out.append(f"  {mode:<8} " + ", ".join(cells))
    res["backend_ratio_to_up"] = ratios
    return ratios


def build(
    res: dict[str, Any],
    tpch_samples: dict[str, dict[str, list[Sample]]],
    tiny_samples: dict[str, list[Sample]],
    backend: dict[str, list[Sample]],
    sink: dict[str, float],
    args: argparse.Namespace,
    rng: random.Random,
    json_path: Path,
) -> str:
    """Fill ``res`` with every figure and return the printed text (the table first)."""
    out: list[str] = []
    geo = _tpch_section(out, res, tpch_samples, rng, args.resamples)
    added = _tiny_section(out, res, tiny_samples, args.tiny_block, rng, args.resamples)
    down = _backend_section(out, res, backend, args.tiny_block, rng, args.resamples)
    rows, targets = [], []
    script = f"`overhead.py --scale {args.scale} --rounds {args.rounds}`"
    target = 0.01 if args.scale >= 1 else 0.03
    nq = len(tpch_samples)
    ctl = geo["control"]
    for arm, what in (("default", "default plan-artifact capture"), ("span", "span only")):
        w, c = geo[arm]["wall"], geo[arm]["cpu"]
        ok = verdict(max(w[0], c[0]), 1 + target)  # the target is for capture only
        noise = max(abs(ctl["wall"][0] - 1), abs(ctl["cpu"][0] - 1))
        flag = noisy(noise, target, f"{100 * target:g} %")
        shown = f" ({ok}{flag})" if arm == "default" else ""
        rows.append(
            f"| {what}, TPC-H SF {args.scale}, geometric mean over {nq} queries "
            f"({args.rounds} rounds) | wall **{pct(w[0])}** [{pct(w[1])}, {pct(w[2])}], "
            f"process CPU **{pct(c[0])}** [{pct(c[1])}, {pct(c[2])}]{shown}; plain-vs-plain "
            f"control wall {pct(ctl['wall'][0])}, CPU {pct(ctl['cpu'][0])} "
            f"| {f'<= {100 * target:.0f} %' if shown else 'reported'} | {script} |"
        )
        if shown:
            targets.append({"what": f"{arm} capture TPC-H", "target": 1 + target, "verdict": ok,
                            "wall": w[0], "cpu": c[0]})  # fmt: skip
    fn, full, naive = geo["full/naive"], geo["full"], geo["naive"]
    rows.append(
        f"| full capture (ALL_ARTIFACTS) against the naive way (query + real EXPLAIN ANALYZE), "
        f"TPC-H SF {args.scale} | full / naive: wall **{fn['wall'][0]:.2f} x**, CPU "
        f"**{fn['cpu'][0]:.2f} x**; to plain: full {pct(full['wall'][0])} wall / "
        f"{pct(full['cpu'][0])} CPU, naive {pct(naive['wall'][0])} / {pct(naive['cpu'][0])} "
        f"| reported | {script} |"
    )
    plain_ms = res["tiny"]["plain_wall_ms"]
    tiny_arms = (("default", "default capture"), ("span", "span only"))
    tiny_arms += (("default_min", f"default capture, capture_min_duration_ms={MIN_DURATION_MS:g}"),)
    for arm, what in tiny_arms:
        label = f"{what}, ~{plain_ms:.1f} ms query (filter + aggregate, 1,000 rows), added per call"
        if arm not in added:
            rows.append(f"| {label} | n/a (option not available) | <= {TINY_TARGET_MS} ms | "
                        f"{script} |")  # fmt: skip
            targets.append({"what": f"tiny {arm}", "verdict": "n/a (option not available)"})
            continue
        w, c = added[arm]["wall"], added[arm]["cpu"]
        ok = verdict(max(w[0], c[0]), TINY_TARGET_MS)
        noise = max(abs(added["control"]["wall"][0]), abs(added["control"]["cpu"][0]))
        flag = noisy(noise, TINY_TARGET_MS, f"{TINY_TARGET_MS} ms")
        shown = f" ({ok}{flag})" if arm != "span" else ""  # span only: no target
        cw, cc = added["control"]["wall"][0], added["control"]["cpu"][0]
        rows.append(
            f"| {label} | wall **{w[0]:+.3f} ms** [{w[1]:+.3f}, {w[2]:+.3f}], CPU "
            f"**{c[0]:+.3f} ms** [{c[1]:+.3f}, {c[2]:+.3f}]{shown}; control {cw:+.3f} / "
            f"{cc:+.3f} ms | {f'<= {TINY_TARGET_MS} ms' if shown else 'reported'} | {script} |"
        )
        if shown:
            targets.append({"what": f"tiny {arm}", "target_ms": TINY_TARGET_MS, "verdict": ok,
                            "wall_ms": w[0], "cpu_ms": c[0]})  # fmt: skip
    worst = max(v for k, v in down.items() if not k.endswith("up_control"))
    noise = max(abs(v - 1) for k, v in down.items() if k.endswith("up_control"))
    flag = noisy(noise, BACKEND_TARGET - 1, f"{BACKEND_TARGET - 1:.0%}")
    ok = verdict(worst, BACKEND_TARGET) + flag
    cells = ", ".join(
        f"{k.replace('/', ' ')} {v:.3f}" for k, v in down.items() if not k.endswith("up_control")
    )
    ctl_cells = ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in down.items() if "control" in k)
    rows.append(
        f"| query latency with the OTLP backend down (refusing; accepting, never answering) / up "
        f"(real receiver), tiny query | {cells}; worst **{worst:.3f}** ({ok}); up-vs-up control "
        f"{ctl_cells} | <= {BACKEND_TARGET} | {script} |"
    )
    targets.append({"what": "backend down / up", "target": BACKEND_TARGET, "verdict": ok,
                    "worst": worst})  # fmt: skip
    rows_count = sink["rows"]
    rec, wrote = rows_count / sink["recorded_s"], rows_count / sink["written_s"]
    rows.append(
        f"| run rows into `ParquetSink` ({rows_count:,.0f} rows) | {rec:,.0f} rows/s recorded on "
        f"the calling thread, {wrote:,.0f} rows/s written to disk | - | {script} |"
    )
    res["parquet_sink"] = {**sink, "recorded_rows_per_s": rec, "written_rows_per_s": wrote}
    res["targets"] = targets
    res["table_md"] = rows
    head = [
        f"datafusion-otel overhead: TPC-H SF {args.scale}, {nq} queries (q15 left out: three "
        f"statements), {args.rounds} rounds; tiny query {args.tiny_rounds} rounds; "
        f"python {res['python']}, {res['cpus']} CPUs, {res['seconds']} s",
        f"spans encoded to OTLP protobuf and dropped (TPC-H and tiny sections): "
        f"{res['encoded']['spans']:,} ({res['encoded']['bytes']:,} bytes)",
        f"load average (1/5/15 min): start {res['load_start']}, after TPC-H "
        f"{res['load_after_tpch']}, after tiny {res['load_after_tiny']}, end {res['load_end']}",
        "arms:",
        *res["arms"],
        "",
        "| what | measured | target | script |",
        "|---|---|---|---|",
        *rows,
    ]
    return "\n".join(head + out)
