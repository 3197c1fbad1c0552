"""Command line: trtpipe run | plan | status | show | report | clean RECIPE.

Exit codes: 0 ok, 1 a stage failed, 2 recipe or usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from trtpipe.errors import TrtpipeError


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True, highlight=False)
    try:
        return args.command(args, err) or 0
    except TrtpipeError as e:
        if args.verbose:
            err.print(traceback.format_exc(), markup=False)
        err.print(f"[red]error:[/red] {escape(e.message)}", soft_wrap=True)
        if e.hint:
            err.print(f"  hint: {e.hint}", markup=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted: completed stages are cached; the next run resumes from there")
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtpipe", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("recipe", type=Path, help="recipe YAML file")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set stages.build.opt_level=3 (repeatable)",
    )
    common.add_argument("--target", choices=["tensorrt", "onnxruntime"], help="override the recipe's target")
    common.add_argument("--cache-dir", type=Path, help="store location (default: .trtpipe/ next to the recipe)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    select = argparse.ArgumentParser(add_help=False)
    select.add_argument("--only", nargs="+", default=[], metavar="S", help="run just these stages")
    select.add_argument("--from", dest="start", metavar="S", help="run S and what depends on it")
    select.add_argument("--until", metavar="S", help="run S and what it depends on")

    run = sub.add_parser("run", parents=[common, select], help="run the recipe's stages")
    run.add_argument("--force", nargs="*", metavar="S", help="re-run these stages (all selected if none given)")
    run.set_defaults(command=cmd_run)
    sub.add_parser("plan", parents=[common, select], help="what would run and why").set_defaults(command=cmd_plan)
    sub.add_parser("status", parents=[common], help="state of every stage").set_defaults(command=cmd_status)
    show = sub.add_parser("show", parents=[common], help="outputs and metrics of a stage's last run")
    show.add_argument("stage")
    show.add_argument("--json", action="store_true", help='print {"outputs": {name: path}, "metrics": {...}}')
    show.set_defaults(command=cmd_show)
    report = sub.add_parser("report", parents=[common], help="HTML report of the last run's results")
    report.add_argument("-o", "--output", type=Path, help="HTML file to write (default: build/<recipe>/report.html)")
    report.set_defaults(command=cmd_report)
    sub.add_parser("clean", parents=[common], help="drop cached results no lock file uses").set_defaults(
        command=cmd_clean
    )
    return p


def setup_logging(verbose: bool) -> None:
    from loguru import logger

    logger.remove()
    logger.enable("trtpipe")
    logger.add(sys.stderr, level="DEBUG" if verbose else "WARNING", format="<level>{level}</level> {message}")


def load_runner(args):
    from trtpipe import recipe
    from trtpipe.runner import Runner

    r = recipe.load(args.recipe, args.overrides, args.target)
    return Runner(r, cache_dir=args.cache_dir)


def selection(args):
    from trtpipe.runner import Selection

    return Selection(args.only, args.start, args.until, getattr(args, "force", None))


def cmd_run(args, err) -> int:
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    runner = load_runner(args)
    runner.check(selection(args))
    start = time.perf_counter()
    tasks = {}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:

        def on_event(kind, run, message):
            if kind == "start" and run.status == "ran":
                tasks[run.name] = progress.add_task(f"[bold]{escape(run.name)}[/bold] ({escape(message)})")
            elif kind == "progress":
                progress.update(tasks[run.name], description=f"[bold]{escape(run.name)}[/bold]: {escape(message)}")
            elif kind == "done":
                if run.name in tasks:
                    progress.remove_task(tasks.pop(run.name))
                err.print(stage_line(run), highlight=False)

        runs = runner.run(selection(args), on_event)
    ran = sum(r.status == "ran" for r in runs)
    err.print(
        f"{len(runs)} stages: {ran} ran, {len(runs) - ran} cached, {time.perf_counter() - start:.2f} s; "
        f"lock: {runner.lock_path}"
    )
    return 0


def stage_line(run) -> str:
    from rich.markup import escape

    mark = "[green]✓[/green]" if run.status == "ran" else "[dim]=[/dim]"
    status = {"ran": f"ran {run.seconds:.1f} s", "locked": "from the lock file"}.get(run.status, run.status)
    why = f" ({run.reason})" if run.status in ("ran", "locked") and run.reason else ""
    return f"{mark} [bold]{escape(run.name)}[/bold] {status}{escape(why)}  [dim]{escape(summary(run.metrics))}[/dim]"


def summary(metrics: dict, limit: int = 6) -> str:
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, int | float | bool | str) and len(str(v)) < 40]
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars[:limit])


def cmd_plan(args, err) -> int:
    from rich.console import Console
    from rich.table import Table

    runner = load_runner(args)
    table = Table("#", "stage", "uses", "status", "why", box=None)
    for i, run in enumerate(runner.plan(selection(args)), 1):
        style = {"cached": "dim", "locked": "cyan", "will run": "yellow", "unavailable": "red"}[run.status]
        table.add_row(
            str(i), run.name, runner.recipe.stage(run.name).kind, f"[{style}]{run.status}[/{style}]", run.reason
        )
    Console().print(table)
    return 0


def cmd_status(args, err) -> int:
    from rich.console import Console
    from rich.table import Table

    from trtpipe.runner import Selection

    runner = load_runner(args)
    table = Table("stage", "uses", "state", "last run", "key", "metrics", box=None)
    for run in runner.plan(Selection()):
        last = runner.lock.get(run.name, {})
        state = "up to date" if run.status == "cached" else f"{run.status}: {run.reason}"
        seconds = f"{last['seconds']:.1f} s" if "seconds" in last else "-"
        table.add_row(
            run.name,
            runner.recipe.stage(run.name).kind,
            state,
            seconds,
            (run.key or "-")[:12],
            summary(last.get("metrics", {}), 3),
        )
    Console().print(table)
    return 0


def cmd_show(args, err) -> int:
    from trtpipe.errors import RecipeError, did_you_mean

    runner = load_runner(args)
    if args.stage not in runner.recipe.stages:
        raise RecipeError(f"no stage named '{args.stage}'{did_you_mean(args.stage, runner.recipe.stages)}")
    entry = runner.lock.get(args.stage)
    if entry is None:
        raise RecipeError(
            f"stage '{args.stage}' has not run yet", hint=f"trtpipe run {args.recipe} --until {args.stage}"
        )
    outputs = {name: str(Path(o["path"]).resolve()) for name, o in entry["outputs"].items()}
    if args.json:
        print(json.dumps({"outputs": outputs, "metrics": entry["metrics"]}, indent=2))
        return 0
    from rich.console import Console
    from rich.pretty import Pretty

    console = Console()
    console.print(f"[bold]{args.stage}[/bold] ({entry['uses']}), key {entry['key'][:12]}, {entry['seconds']} s")
    for name, path in outputs.items():
        console.print(f"  output {name}: {path}")
    console.print(Pretty(entry["metrics"]))
    return 0


def cmd_report(args, err) -> int:
    from trtpipe import report

    runner = load_runner(args)
    html = report.for_recipe(runner)
    path = args.output or runner.build_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    err.print(f"report: {path}", soft_wrap=True)
    return 0


def cmd_clean(args, err) -> int:
    runner = load_runner(args)
    files, freed = runner.clean()
    err.print(f"removed {files} files, {freed / 2**20:.1f} MiB from {runner.store.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
