"""An HTML report of a recipe's results: one self-contained file (inline CSS, charts as base64 PNGs, no scripts).

What it shows comes from two places:
- stage outputs, by reference: precision plans (precision-search `plan`), errors with their histograms (compare
  `errors`), latency and the slowest layers (profile `profile`), engine layers (build `layers`);
- the lock file: the stage timeline (seconds, ran or cached) and graph statistics per stage (from stage metrics),
  as the lock file stood when the report was rendered.

`render` draws it; the `report` stage (trtpipe.stages.report) and `trtpipe report RECIPE` (`for_recipe`) call it.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from datetime import datetime
from html import escape
from itertools import accumulate
from pathlib import Path

from trtpipe.errors import RecipeError, StageError

# input field -> (key its JSON holds, stage type and output that make it)
FIELDS = {
    "plan": ("fp32_nodes", "precision-search", "plan"),
    "compare": ("histograms", "compare", "errors"),
    "profile": ("latency", "profile", "profile"),
    "layers": ("layers", "build", "layers"),
}
RAN, CACHED, MEASURED, LIMIT = "#4c72b0", "#b8b8b8", "#222222", "#c0392b"
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3")  # one color per profile stage


def load(files: dict[str, dict[str, Path]]) -> dict[str, dict[str, dict]]:
    """{field: {ref: path}} -> {field: {producer stage: its JSON}}, each file checked to be what its field takes."""
    data: dict[str, dict[str, dict]] = {field: {} for field in FIELDS}
    for field, paths in files.items():
        key, kind, output = FIELDS[field]
        for ref, path in paths.items():
            try:
                content = json.loads(Path(path).read_text())
            except (ValueError, UnicodeDecodeError):
                content = None
            if not isinstance(content, dict) or key not in content:
                raise StageError(
                    f"{field}: {ref} is not the '{output}' output of a {kind} stage",
                    hint=f"{field} takes references like {kind}.{output}",
                )
            data[field][ref.split(".", 1)[0]] = content
    return data


def render(
    recipe,
    lock: dict[str, dict],
    data: dict[str, dict[str, dict]],
    top_layers: int = 20,
    missing: list[str] = (),
    drawing: str | None = None,
) -> str:
    """The report page. `lock`: the lock file's stage entries; `data`: what `load` returns; `missing`: stages whose
    outputs were asked for but could not be had, listed at the top; `drawing`: the report stage drawing the page,
    left out of the timeline."""
    from trtpipe import dag

    order = [name for name in dag.order(recipe.stages) if name != drawing]
    sections = [
        ("timeline", "Stage timeline", timeline(order, lock, recipe)),
        ("graph", "Graph per stage", graph_stats(order, lock)),
        ("plan", "Precision plan", "".join(precision_plan(name, p) for name, p in data["plan"].items())),
        ("accuracy", "Accuracy", "".join(accuracy(name, e) for name, e in data["compare"].items())),
        ("latency", "Latency", latency(data["profile"])),
        ("layers", f"Slowest {top_layers} layers", slowest_layers(data["profile"], top_layers)),
        ("engine", "Engine layers", "".join(engine_layers(name, t) for name, t in data["layers"].items())),
    ]
    sections = [s for s in sections if s[2]]
    nav = " · ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{html}</section>' for key, title, html in sections)
    note = p(bad(f"No results (not run, or not in the cache): {', '.join(missing)}")) if missing else ""
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = f"trtpipe report: {escape(recipe.name)}"
    meta = f"recipe {escape(str(recipe.path))} · target {escape(recipe.target)} · rendered {when}"
    return PAGE.format(title=title, css=CSS, meta=meta, note=note, nav=nav, body=body)


def for_recipe(runner) -> str:
    """The report of a recipe's last run, from its lock file and the store, with or without a report stage: the
    recipe's report stage says what to show, else every profile, compare, precision-search and build stage."""
    recipe = runner.recipe
    if not runner.lock:
        raise RecipeError(
            f"nothing has run yet for {recipe.path} (no {runner.lock_path.name})", hint=f"trtpipe run {recipe.path}"
        )
    stage = next((s for s in recipe.stages.values() if s.kind == "report"), None)
    if stage is not None:
        refs = {field: getattr(stage, field) for field in FIELDS}
    else:
        refs = {
            field: [f"{name}.{output}" for name, s in recipe.stages.items() if s.kind == kind]
            for field, (_, kind, output) in FIELDS.items()
        }
    files: dict[str, dict[str, Path]] = {field: {} for field in FIELDS}
    missing = []
    for field, found in refs.items():
        for ref in found:
            name, output = ref.split(".", 1)
            entry = runner.locked(name)
            if entry is None:
                missing.append(name)
            else:
                files[field][ref] = runner.store.object_path(entry["outputs"][output]["digest"])
    top_layers = stage.top_layers if stage is not None else 20
    return render(recipe, runner.lock, load(files), top_layers, sorted(set(missing)))


# ---------------------------------------------------------------- sections


def timeline(order: list[str], lock: dict[str, dict], recipe) -> str:
    bars = [(name, lock[name]["seconds"], last_run(lock[name])) for name in order if name in lock]
    ran = [seconds for _, seconds, status in bars if status == "ran"]
    cached = [seconds for _, seconds, status in bars if status == "cached"]
    rows = [
        [name, lock[name]["uses"], last_run(lock[name]), f"{lock[name]['seconds']:.1f}", code(lock[name]["key"][:12])]
        if name in lock
        else [name, recipe.stage(name).kind, "not run", "", ""]
        for name in order
    ]
    return (
        p(
            "From the lock file when this report was rendered. <em>ran</em>: the stage ran in that run, taking the "
            "seconds shown; <em>cached</em>: its result came from the cache, the seconds are those of the run that "
            "made it."
        )
        + (image(timeline_chart(bars), "stage durations") if bars else "")
        + p(f"{len(ran)} ran in {sum(ran):.1f} s; {len(cached)} from the cache (they took {sum(cached):.1f} s).")
        + table(["stage", "uses", "last run", "seconds", "key"], rows, numeric=[3])
    )


def last_run(entry: dict) -> str:
    """ran | cached; "recorded" for entries from before the lock file said."""
    return {True: "cached", False: "ran"}.get(entry.get("cached"), "recorded")


def graph_stats(order: list[str], lock: dict[str, dict]) -> str:
    rows = [graph_row(name, lock[name]) for name in order if name in lock]
    rows = [row for row in rows if row is not None]
    if not rows:
        return ""
    head = ["stage", "uses", "nodes", "initializers", "Casts", "FP32 nodes", "notes"]
    return p("Node counts before → after each graph stage, from its metrics in the lock file.") + table(
        head, rows, numeric=[2, 3, 4, 5]
    )


def graph_row(name: str, entry: dict) -> list | None:
    m = entry.get("metrics", {})
    nodes = before_after(m, "nodes")
    if nodes is None and "casts" not in m:
        return None
    fp32 = m.get("fp32_count", m.get("fp32_nodes"))
    fp32 = fp32 if isinstance(fp32, int) else None
    initializers = before_after(m, "initializers")
    return [name, entry["uses"], nodes or "", initializers or "", num(m.get("casts")), num(fp32), text(notes(m))]


def before_after(metrics: dict, what: str) -> str | None:
    before, after = metrics.get(f"{what}_before"), metrics.get(f"{what}_after")
    if isinstance(before, int) and isinstance(after, int):
        return f"{before} → {after} ({after - before:+d})"
    value = metrics.get(what)
    if isinstance(value, dict):  # nodes per precision
        return str(sum(v for v in value.values() if isinstance(v, int)))
    return str(value) if isinstance(value, int) else None


def notes(m: dict) -> str:
    found = []
    if isinstance(m.get("parameters"), int):
        found.append(f"{m['parameters'] / 1e6:.2f} M parameters")
    if isinstance(m.get("nodes"), dict):
        found.append("by precision: " + counts(m["nodes"]))
    if isinstance(m.get("fp32_nodes"), dict):
        found.append("FP32 by rule: " + counts(Counter(m["fp32_nodes"].values())))
    if isinstance(m.get("patterns"), dict):
        fused = {k: len(v["fused"]) for k, v in m["patterns"].items() if isinstance(v, dict) and v.get("fused")}
        found.append("fused: " + counts(fused) if fused else "nothing fused")
    if "engine_layers" in m:
        found.append(f"{m['engine_layers']} engine layers, {m.get('reformat_layers', 0)} reformat")
    if "budget_met" in m:
        found.append(f"budget met: {m['budget_met']}, {m.get('evaluations', '?')} candidates evaluated")
    return "; ".join(found)


def precision_plan(name: str, plan: dict) -> str:
    nodes = plan["fp32_nodes"]
    backend = escape(plan.get("backend", {}).get("name", "?"))
    reference = escape(str(plan.get("reference", "?")))
    summary = (
        f"{len(nodes)} FP32 nodes, the rest in {escape(plan.get('dtype', '?'))}; {num(plan.get('casts'))} Casts; "
        f"searched on {backend} against the {reference} outputs, {num(plan.get('evaluations'))} candidates "
        "evaluated; budget " + (ok("met") if plan.get("budget_met") else bad("not met"))
    )
    steps = Counter(n["chosen_by"].split(" (")[0] for n in nodes)
    rows = [[code(n["node"]), n.get("op", ""), code(n.get("module") or "-"), n["chosen_by"]] for n in nodes]
    return (
        f"<h3>{escape(name)}</h3>"
        + p(summary)
        + budget_table(plan.get("budget", {}), plan.get("errors", {}))
        + candidates_table(plan.get("candidates", []))
        + p("Chosen by: " + escape(counts(steps)))
        + table(["FP32 node", "op", "torch module", "chosen by"], rows)
    )


def candidates_table(candidates: list[dict]) -> str:
    """The search's candidates in the order it evaluated them: FP32 nodes beyond the pins, errors, latency."""
    if not candidates:
        return ""
    rows = []
    for i, c in enumerate(candidates, 1):
        pairs = c["errors"].items()
        errors = "; ".join(f"{out} {num(e.get('mean_abs'))} / {num(e.get('max_abs'))}" for out, e in pairs)
        verdict = ok("met") if c["met"] else bad("build failed" if "build" in c["violations"] else "missed")
        latency = num(c.get("latency_ms"))
        rows.append([i, c["fp32_nodes"], c["casts"], errors or "-", latency, num(c["seconds"]), verdict])
    head = ["#", "FP32 nodes", "Casts", "errors: mean / max", "latency ms", "seconds", "budget"]
    return p("Candidates, in the order the search evaluated them (FP32 nodes beyond the pins):") + table(
        head, rows, numeric=[0, 1, 2, 4, 5]
    )


def budget_table(budget: dict, errors: dict) -> str:
    rows = []
    for output, limits in budget.items():
        for key, limit in limits.items():
            value = errors.get(output, {}).get(key)
            passed = value is not None and (value >= limit if key == "cosine" else value <= limit)
            sign = "≥" if key == "cosine" else "≤"
            rows.append([output, key, f"{sign} {limit:.3g}", num(value), ok("met") if passed else bad("exceeded")])
    return table(["output", "error", "budget", "measured", ""], rows, numeric=[3]) if rows else ""


ERROR_KEYS = ("mean_abs", "max_abs", "median_abs", "p99_abs", "mean_rel", "cosine")


def accuracy(name: str, errors: dict) -> str:
    stats, tolerances = errors["stats"], errors.get("tolerances", {})
    violations = errors.get("violations", {})
    rows = []
    for output, s in stats.items():
        limits = ", ".join(f"{k} {v:.3g}" for k, v in tolerances.get(output, {}).items()) or "-"
        verdict = bad(", ".join(violations[output])) if output in violations else ok("ok")
        rows.append([output, *(num(s.get(k)) for k in ERROR_KEYS), code(str(s.get("max_abs_at", ""))), limits, verdict])
    reference = escape(str(errors.get("reference", "?")))
    return (
        f"<h3>{escape(name)}</h3>"
        + p(f"Against {reference}. Histograms: |engine − reference| per element, log-spaced bins.")
        + table(["output", *ERROR_KEYS, "max at", "tolerance", ""], rows, numeric=[1, 2, 3, 4, 5, 6])
        + image(histogram_chart(errors["histograms"], stats, tolerances), f"{name}: error histograms")
    )


def latency(profiles: dict[str, dict]) -> str:
    bars = [(name, mode, s) for name, profile in profiles.items() for mode, s in profile["latency"].items()]
    if not bars:
        return ""
    fastest = min(s["median_ms"] for _, _, s in bars)
    rows = [latency_row(f"{name} · {mode}", s, fastest) for name, mode, s in bars]
    head = ["profile · mode", "median ms", "mean", "p90", "p99", "min", "per s", "vs fastest", "iterations"]
    failed = [
        p(bad(f"{name}: CUDA graph capture failed ({profile['cuda_graph_fallback']})"))
        for name, profile in profiles.items()
        if profile.get("cuda_graph_fallback")
    ]
    return (
        p(
            "Milliseconds per inference. <em>cuda_graph</em>: replayed CUDA graph; <em>enqueue</em>: plain enqueue; "
            "<em>onnxruntime</em>: timed on the host. Chart: bar at the median, whisker from min to p99."
        )
        + image(latency_chart(bars), "latency per profile")
        + table(head, rows, numeric=[1, 2, 3, 4, 5, 6, 7, 8])
        + "".join(failed)
    )


def latency_row(label: str, s: dict, fastest: float) -> list:
    times = [num(s[k], ".4g") for k in ("median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms")]
    ratio = f"{s['median_ms'] / fastest:.2f}×"
    return [label, *times, num(s["throughput_per_s"], ".1f"), ratio, num(s["iterations"])]


def slowest_layers(profiles: dict[str, dict], top: int) -> str:
    html = ""
    for name, profile in profiles.items():
        layers = sorted((r for r in profile.get("layers", []) if r.get("time_ms")), key=lambda r: -r["time_ms"])
        if not layers:
            continue
        total = sum(r["time_ms"] for r in layers)
        running = accumulate(r["time_ms"] for r in layers[:top])
        rows = [layer_row(i, r, total, upto) for i, (r, upto) in enumerate(zip(layers[:top], running), 1)]
        precisions = counts(profile.get("layers_per_precision", {}))
        html += f"<h3>{escape(name)}</h3>" + p(
            f"{len(profile['layers'])} engine layers, {total:.4g} ms in all (per-layer profiling); "
            f"reformat layers: {num(profile.get('reformat_layers'))}; layers per precision: {escape(precisions)}"
        )
        head = ["#", "layer", "type", "precision", "ms", "%", "cum. %", "ONNX nodes", "torch module"]
        html += table(head, rows, numeric=[0, 4, 5, 6])
    return html


def layer_row(rank: int, r: dict, total: float, upto: float) -> list:
    """A layer's time, its share of the total and the running share of the layers up to it."""
    from trtpipe.precision.ops import torch_module

    nodes = r.get("onnx_nodes", [])
    origin = code(", ".join(nodes[:2]) + (f" +{len(nodes) - 2}" if len(nodes) > 2 else ""))
    module = code(torch_module(nodes[0]) if nodes else "")
    shares = [f"{100 * r['time_ms'] / total:.1f}", f"{100 * upto / total:.1f}"]
    return [
        rank,
        code(r["name"]),
        r.get("type", ""),
        r.get("precision") or "-",
        f"{r['time_ms']:.4f}",
        *shares,
        origin,
        module,
    ]


def engine_layers(name: str, layers: dict) -> str:
    rows = layers["layers"]
    precision = Counter(r.get("precision") or "-" for r in rows if not r.get("reformat"))
    types = Counter(r.get("type") or "?" for r in rows)
    reformat = sum(bool(r.get("reformat")) for r in rows)
    summary = f"{len(rows)} layers ({reformat} reformat); by type: {counts(dict(types.most_common(12)))}"
    summary += " …" if len(types) > 12 else ""
    if set(precision) != {"-"}:
        summary += f"; by precision: {counts(precision)}"
    html = f"<h3>{escape(name)}</h3>" + p(escape(summary))
    if mismatches := layers.get("plan_mismatches", []):
        rows = [[code(m["layer"]), code(m["node"]), m["plan"], bad(m["engine"])] for m in mismatches]
        html += p(f"{len(mismatches)} layers run in another precision than the plan gives their ONNX node:")
        html += table(["layer", "ONNX node", "plan", "engine"], rows)
    return html


# ---------------------------------------------------------------- charts


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def image(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def timeline_chart(bars: list[tuple[str, float, str]]):
    fig = figure(10, 0.8 + 0.32 * len(bars))
    ax = fig.subplots()
    names = [name for name, _, _ in bars]
    seconds = [s for _, s, _ in bars]
    colors = [CACHED if status == "cached" else RAN for _, _, status in bars]
    ax.barh(names, seconds, color=colors)
    for i, (_, s, status) in enumerate(bars):
        ax.text(s, i, f" {s:.1f} s" + (" (cached)" if status == "cached" else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_xlim(0, max(seconds + [0.1]) * 1.18)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def latency_chart(bars: list[tuple[str, str, dict]]):
    fig = figure(10, 0.9 + 0.4 * len(bars))
    ax = fig.subplots()
    stages = list(dict.fromkeys(name for name, _, _ in bars))
    colors = [PALETTE[stages.index(name) % len(PALETTE)] for name, _, _ in bars]
    labels = [f"{name} · {mode}" for name, mode, _ in bars]
    median = [s["median_ms"] for _, _, s in bars]
    low = [s["median_ms"] - s["min_ms"] for _, _, s in bars]
    high = [s["p99_ms"] - s["median_ms"] for _, _, s in bars]
    ax.barh(labels, median, height=0.5, color=colors, xerr=[low, high], error_kw={"ecolor": MEASURED, "capsize": 3})
    for i, m in enumerate(median):
        ax.text(0, i, f"  {m:.3g} ms", va="center", ha="left", fontsize=8, color="white", fontweight="bold")
    ax.invert_yaxis()
    ax.set_xlabel("ms (median; whisker: min to p99)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def histogram_chart(histograms: dict[str, dict], stats: dict[str, dict], tolerances: dict[str, dict]):
    import numpy as np
    from matplotlib.ticker import NullFormatter

    columns = min(2, len(histograms))
    rows = -(-len(histograms) // columns)
    fig = figure(5 * columns, 2.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax, (output, h) in zip(axes, histograms.items()):
        edges, hist = np.asarray(h["edges"]), np.asarray(h["counts"])
        log = hist.max() > 100  # a long tail of small counts shows on a log axis only
        ax.bar(edges[:-1], hist, width=np.diff(edges), align="edge", color=RAN, log=log)
        marks = error_marks(stats[output], tolerances.get(output, {}))
        for label, (x, color, style) in marks.items():
            ax.axvline(x, color=color, linestyle=style, lw=1.2, label=label)
        ax.set_xscale("log")
        ax.set_xlim(*histogram_range(edges, hist, [x for x, _, _ in marks.values()]))
        if log:
            ax.set_ylim(bottom=0.7)
            ax.yaxis.set_minor_formatter(NullFormatter())
        non_finite = f", {h['non_finite']} NaN/Inf" if h.get("non_finite") else ""
        ax.set_title(f"{output}: {int(hist.sum())} elements{non_finite}", fontsize=10)
        ax.set_xlabel("|error| (first bin: 1e-9 and below)")
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(histograms) :]:
        ax.set_visible(False)
    return fig


def error_marks(stats: dict, tolerance: dict) -> dict[str, tuple[float, str, str]]:
    """Vertical lines on an error histogram: label -> (x, color, style) for the measured mean and max (black) and
    their tolerances (red); zeros have no place on a log axis."""
    marks = {}
    for key, style in (("mean_abs", ":"), ("max_abs", "-")):
        marks[f"{key.split('_')[0]} {stats[key]:.2g}"] = (stats[key], MEASURED, style)
        if key in tolerance:
            marks[f"{key} tolerance {tolerance[key]:.2g}"] = (tolerance[key], LIMIT, "--" if style == "-" else ":")
    return {label: mark for label, mark in marks.items() if mark[0] > 0}


def histogram_range(edges, counts, marks: list[float]) -> tuple[float, float]:
    """The x range holding the non-empty bins and the marked values, a decade of margin each side."""
    filled = [i for i, c in enumerate(counts) if c]
    points = [edges[filled[0]], edges[filled[-1] + 1]] if filled else [edges[0], edges[-1]]
    points += [x for x in marks if x > 0]
    return max(edges[0], min(points) / 10), min(edges[-1], max(points) * 10)


# ---------------------------------------------------------------- HTML


def table(head: list[str], rows: list[list], numeric: list[int] = ()) -> str:
    """Cells are HTML already (escape text with `escape`, `code`); columns in `numeric` align right."""
    th = "".join(f"<th{cls(i, numeric)}>{escape(h)}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i, numeric)}>{cell_html(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def cell_html(cell) -> str:
    return cell if isinstance(cell, Markup) else escape(str(cell))


def cls(i: int, numeric) -> str:
    return ' class="num"' if i in numeric else ""


class Markup(str):
    """HTML that `table` puts in as it is."""


def code(name: str) -> Markup:
    """Monospace, breakable after the separators of node and module names."""
    return Markup("<code>" + escape(name).replace("/", "/<wbr>").replace(".", ".<wbr>") + "</code>")


def text(words: str) -> Markup:
    """Text that wraps (table cells do not)."""
    return Markup(f'<span class="text">{escape(words)}</span>')


def ok(words: str) -> Markup:
    return Markup(f'<span class="ok">{escape(words)}</span>')


def bad(words: str) -> Markup:
    return Markup(f'<span class="bad">{escape(words)}</span>')


def p(html: str) -> str:
    return f"<p>{html}</p>"


def num(value, spec: str = ".3g") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return str(value) if isinstance(value, int) else format(value, spec)


def counts(mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       max-width: 1180px; padding: 12px 24px 48px; }
h1 { font-size: 22px; margin-bottom: 2px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; margin-top: 32px; }
h3 { font-size: 15px; margin: 18px 0 4px; } .meta { color: #666; margin-top: 0; } nav { margin-bottom: 8px; }
a { color: #2b5c9e; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12.5px; width: 100%; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; } tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td { white-space: nowrap; } td code, td .text, td .bad { white-space: normal; }
code { font: 11.5px ui-monospace, Menlo, Consolas, monospace; }
img { max-width: 100%; display: block; margin: 8px 0; }
.ok { color: #1e7b34; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body><h1>{title}</h1><p class="meta">{meta}</p>{note}<nav>{nav}</nav>
{body}
</body></html>
"""
