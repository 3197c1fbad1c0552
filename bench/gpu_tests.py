"""Run the GPU tests and record the result: bench/results/gpu_tests_<date>.json with gpu, tensorrt, passed, failed
(counted from pytest's JUnit XML), the failing tests, and pytest's summary line.

usage (GPU machine, project root):
    bash /opt/trtparts/install.sh && . /opt/trt/env.sh && python bench/gpu_tests.py [PYTEST ARGS ...]
PYTEST ARGS default to tests/test_trt_gpu.py (the bundle has no torch, so test modules importing it cannot load).
"""

import datetime
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(args: list[str], junit: Path) -> tuple[int, str]:
    tests = args or ["tests/test_trt_gpu.py"]
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "--tb=short", f"--junitxml={junit}", *tests]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout, proc.stderr, sep="\n")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines[-1].strip("= ") if lines else ""


def outcomes(junit: Path) -> dict:
    cases = ET.parse(junit).getroot().iter("testcase")
    found = {"passed": [], "failed": [], "skipped": []}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        found["failed" if kind in ("failure", "error") else kind].append(name)
    return found


def main(args: list[str]) -> int:
    from trtpipe.backends.tensorrt import facts

    env = facts()
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        code, summary = run_pytest(args, junit)
        found = outcomes(junit)
    result = {
        "gpu": env["gpu"],
        "compute_capability": env["compute_capability"],
        "tensorrt": env["tensorrt"],
        "passed": len(found["passed"]),
        "failed": len(found["failed"]),
        "skipped": len(found["skipped"]),
        "failures": found["failed"],
        "summary": summary,
        "pytest_exit_code": code,
    }
    table = Table("gpu", "tensorrt", "passed", "failed", "skipped", title="GPU tests")
    table.add_row(env["gpu"], env["tensorrt"], *(str(result[k]) for k in ("passed", "failed", "skipped")))
    Console().print(table)
    out = ROOT / "bench" / "results" / f"gpu_tests_{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
