"""Time an unchanged re-run of recipes: every stage must be a cache hit, in well under a second.

usage: python bench/rerun.py [RECIPE ...]      (default: recipes/tiny.yaml)
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def trtpipe(recipe: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trtpipe", "run", recipe], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"trtpipe run {recipe} failed:\n{proc.stderr}")
    return time.perf_counter() - start, proc.stderr


def main(recipes: list[str]) -> None:
    table = Table("recipe", "first run s", "re-run s (median of 5)", "stages cached")
    results = {}
    for recipe in recipes:
        first, _ = trtpipe(recipe)
        times, log = zip(*(trtpipe(recipe) for _ in range(5)))
        lines = [line for line in log[-1].splitlines() if line.startswith(("✓", "="))]
        cached = sum(line.startswith("=") for line in lines)
        results[recipe] = {
            "first_s": first,
            "rerun_s": statistics.median(times),
            "stages": len(lines),
            "cached": cached,
        }
        table.add_row(recipe, f"{first:.2f}", f"{statistics.median(times):.3f}", f"{cached}/{len(lines)}")
    Console().print(table)
    out = ROOT / "bench/results/rerun.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["recipes/tiny.yaml"])
