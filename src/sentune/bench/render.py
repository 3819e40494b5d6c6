"""The benchmark's output: CSV tables, `bench.json`, `summary.md`, `bench.html` (Plotly) and the
printed table, all from `curves.compute_results`."""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from sentune import config, machine, runs
from sentune.bench.curves import DEFINITIONS, BenchResults, compute_results
from sentune.bench.methods import METHODS, PEER, BenchOptions, MethodRun
from sentune.bench.peer import peer_unmapped
from sentune.bench.throughput import TRAINER_LOOP, TRIAL_LOOP
from sentune.errors import SentuneError
from sentune.space import SearchSpec

log = logging.getLogger(__name__)

#: Optuna's TPESampler proposes at random until this many trials have finished.
_TPE_STARTUP_TRIALS = 10


def write_results(
    out: Path,
    method_runs: list[MethodRun],
    throughput: pd.DataFrame,
    *,
    spec: SearchSpec,
    options: BenchOptions,
) -> BenchResults:
    """Compute the results and write them to `out`: CSV tables, `summary.md`, `bench.html` (if
    plotly is installed) and `bench.json` (settings, seeds, machine and versions).

    Args:
        out: The results folder (created).
        method_runs: Every method's searches.
        throughput: `measure_throughput`'s table (may be empty).
        spec: The space (of the first seed).
        options: The benchmark's options.

    Returns:
        The computed results.
    """
    results = compute_results(
        method_runs, throughput, target=options.target, budget_s=options.budget_s
    )
    out.mkdir(parents=True, exist_ok=True)
    runs.write_csv(results.results, out / "results.csv")
    runs.write_csv(results.curves, out / "curves.csv")
    runs.write_csv(results.bands, out / "bands.csv")
    runs.write_csv(results.throughput, out / "throughput.csv")
    manifest = bench_manifest(spec, options, results)
    runs.write_json(out / "bench.json", manifest)
    runs.write_text(out / "summary.md", render_summary(results, manifest))
    try:
        figure = plot_curves(results)
    except SentuneError as err:
        log.warning("bench.html not written: %s", err)
    else:
        figure.write_html(out / "bench.html", include_plotlyjs=True, full_html=True)
    return results


def bench_manifest(spec: SearchSpec, options: BenchOptions, results: BenchResults) -> dict:
    """What the benchmark was: space, settings, seeds, target, commit, versions, host, device."""
    return {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "space": {
            "name": spec.name,
            "path": str(spec.path),
            "searched": sorted(spec.params),
            "fixed": spec.fixed,
        },
        "model": spec.model,
        "data": asdict(spec.data),
        "budget": asdict(spec.budget),
        "options": asdict(options),
        "methods": {name: asdict(METHODS[name]) for name in options.methods},
        "peer_unmapped": peer_unmapped(spec),
        "target": results.target,
        "target_source": results.target_source,
        "git_commit": machine.git_commit(),
        "versions": machine.package_versions(),
        "host": machine.host_description(),
        "device": machine.device_description(),
    }


def render_summary(results: BenchResults, manifest: dict) -> str:
    """`summary.md`: settings, the per-method table, throughput and the definitions."""
    options = manifest["options"]
    lines = [
        f"# Search strategies on `{manifest['space']['name']}`, {options['budget_s']:.0f} s each",
        "",
        f"- model `{manifest['model']}`, data `{manifest['data']['dataset']}` "
        f"(train {manifest['data']['train_size']}, val {manifest['data']['val_size']}), "
        f"searched: {', '.join(manifest['space']['searched']) or 'nothing'}",
        f"- fixed: {manifest['space']['fixed']}",
        f"- methods: {', '.join(options['methods'])}; seeds {list(options['seeds'])}",
        f"- target macro-F1 {results.target:.4f} ({results.target_source})",
        f"- peer cannot vary: {', '.join(manifest['peer_unmapped']) or 'nothing'}",
        f"- host {manifest['host']['name']} ({manifest['host']['cpus']} CPUs), "
        f"device {manifest['device']}, commit {manifest['git_commit']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in manifest['versions'].items())}",
        "",
        "## Answers",
        "",
        *[f"- {line}" for line in headlines(results)],
        "",
        "## Methods (medians over seeds)",
        "",
        _markdown(results.summary),
        "",
        "## Runs",
        "",
        _markdown(results.results.drop(columns=["run_dir"])),
        "",
    ]
    if not results.throughput.empty:
        lines += [
            "## Throughput on one configuration (space's fixed values, defaults elsewhere)",
            "",
            _markdown(results.throughput),
            "",
        ]
    lines += ["## Definitions", "", DEFINITIONS]
    return "\n".join(lines)


def headlines(results: BenchResults) -> list[str]:
    """The three questions answered in one line each, from the computed tables."""
    lines = []
    summary = results.summary
    if not summary.empty and PEER in set(summary["method"]):
        for row in summary[summary["method"] != PEER].itertuples(index=False):
            if np.isfinite(row.ttt_trial_s_median):
                reach = (
                    f"reaches the target {results.target:.4f} in {row.ttt_trial_s_median:.0f} "
                    f"trial-s / {row.ttt_wall_s_median:.0f} wall-s (median; {row.reached}/"
                    f"{row.seeds} seeds reach it): {row.speedup_vs_peer_trial_s:.2f}x / "
                    f"{row.speedup_vs_peer_wall_s:.2f}x the peer's speed"
                )
            else:
                # A median over seeds that did not all get there is infinite: no ratio to give.
                reach = (
                    f"does not reach the target {results.target:.4f} in the median seed "
                    f"({row.reached}/{row.seeds} seeds reach it), so no speed ratio"
                )
            if np.isfinite(row.ttt_trial_s_median):
                reach += (
                    f" (its time over the peer's, per seed: quartiles {row.wall_ratio_q25:.2f}-"
                    f"{row.wall_ratio_q75:.2f})"
                )
            lines.append(
                f"`{row.method}` {reach}; final best {row.final_best_median:.4f} "
                f"[{row.final_best_min:.4f}, {row.final_best_max:.4f}], at least the peer's in "
                f"{row.final_best_ge_peer}/{row.seeds} seeds"
            )
        peer = summary[summary["method"] == PEER].iloc[0]
        lines.append(
            f"`peer` final best {peer.final_best_median:.4f} "
            f"[{peer.final_best_min:.4f}, {peer.final_best_max:.4f}], "
            f"target reached in {peer.ttt_trial_s_median:.0f} trial-s (median)"
        )
    tpe = summary[summary["method"].str.startswith("tpe")] if not summary.empty else summary
    if len(tpe) and tpe["trials_median"].max() <= _TPE_STARTUP_TRIALS:
        lines.append(
            f"TPE draws its first {_TPE_STARTUP_TRIALS} trials at random, the same draws as the "
            "random sampler with the same seed (Optuna's n_startup_trials); with at most "
            f"{tpe['trials_median'].max():.0f} trials per search here, tpe-* and random-* "
            "differ only by timing and pruning, not by TPE's model: give a larger budget"
        )
    loops = results.throughput.set_index("loop") if not results.throughput.empty else None
    if loops is not None and {TRIAL_LOOP, TRAINER_LOOP} <= set(loops.index):
        trial, trainer = loops.loc[TRIAL_LOOP], loops.loc[TRAINER_LOOP]
        lines.append(
            f"trial loop {trial.samples_per_s:.1f} samples/s vs plain Trainer "
            f"{trainer.samples_per_s:.1f} ({trial.samples_per_s / trainer.samples_per_s:.2f}x), "
            f"{trial.threads:.0f} thread(s); peak RSS {trial.peak_rss_mb:.0f} vs "
            f"{trainer.peak_rss_mb:.0f} MiB"
        )
        ray = results.results.loc[results.results["method"] != PEER, "overhead_s_mean"]
        if ray.notna().any():
            lines.append(
                f"overhead per trial outside training and evaluation: {ray.median():.1f} s "
                f"under Ray (median over runs) vs {trial.overhead_s:.1f} s for a direct "
                f"`run_trial` call: Ray costs about {ray.median() - trial.overhead_s:.1f} s "
                "per trial"
            )
    return lines


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(none)"
    shown = table.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def plot_curves(results: BenchResults):
    """Anytime curves of every method (median line, IQR band, min/max dotted), against
    cumulative trial-seconds and against wall seconds, with the target as a line."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise SentuneError("bench.html needs plotly: pip install plotly") from None
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("against cumulative trial-seconds", "against wall-clock seconds"),
        shared_yaxes=True,
    )
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    methods = list(dict.fromkeys(results.bands["method"]))
    for col, x in enumerate(("trial_s", "wall_s"), start=1):
        for i, method in enumerate(methods):
            band = results.bands[(results.bands["method"] == method) & (results.bands["x"] == x)]
            color = palette[i % len(palette)]
            show = col == 1
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([band["value"], band["value"][::-1]]),
                    y=np.concatenate([band["q75"], band["q25"][::-1]]),
                    fill="toself",
                    fillcolor=color,
                    opacity=0.2,
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=method,
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
            for stat in ("min", "max"):
                figure.add_trace(
                    go.Scatter(
                        x=band["value"],
                        y=band[stat],
                        mode="lines",
                        line={"color": color, "width": 1, "dash": "dot"},
                        legendgroup=method,
                        showlegend=False,
                        name=f"{method} {stat}",
                    ),
                    row=1,
                    col=col,
                )
            figure.add_trace(
                go.Scatter(
                    x=band["value"],
                    y=band["median"],
                    mode="lines",
                    line={"color": color, "width": 2, "shape": "hv"},
                    legendgroup=method,
                    showlegend=show,
                    name=method,
                ),
                row=1,
                col=col,
            )
        if not math.isnan(results.target):
            figure.add_hline(
                y=results.target, line={"dash": "dash", "color": "gray"}, row=1, col=col
            )
    figure.update_xaxes(title_text="cumulative trial-seconds", row=1, col=1)
    figure.update_xaxes(title_text="wall-clock seconds", row=1, col=2)
    figure.update_yaxes(title_text=f"best {config.VAL_MACRO_F1} so far", row=1, col=1)
    figure.update_layout(
        title=f"Anytime curves: median, IQR band, min/max dotted; target {results.target:.4f}",
        template="plotly_white",
    )
    return figure


def print_results(results: BenchResults, out: Path) -> None:
    """Print the per-method table, the throughput table and where the files are."""
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        print(f"\nTarget {config.VAL_MACRO_F1} {results.target:.4f} ({results.target_source})")
        print(results.summary.to_string(index=False))
        if not results.throughput.empty:
            print("\nThroughput on one configuration:")
            print(results.throughput.to_string(index=False))
    print()
    for line in headlines(results):
        print(line.replace("`", ""))
    print(f"\nbench results: {out}")
