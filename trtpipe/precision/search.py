"""The smallest FP32 set (or, where the backend times candidates, the fastest) that meets an accuracy budget per
output, measured on a backend.

0. build: when low precision everywhere but the pins does not build, the nodes of the layer the backend failed on
   stay FP32 (once: a candidate that still does not build ends the search with the backend's error);
1. seeds: node sets named in the recipe (a subgraph suspected to need FP32), tried in order, before any ranking is
   computed (a local one costs a sensitivity run); the first that meets the budget goes to step 2 as it is, its nodes
   in graph order; when none does (or none is given),
   greedy: keep the top of the sensitivity ranking FP32, growing the prefix from 1 node until the budget is met, by
   the factor its worst error is over the budget, between 1.25 and 2 (doubling while far off; on DAB-DETR-R50 a
   prefix of 64 missed by 5% and the doubling's 128 built an engine 39% slower), then bisect to the shortest prefix
   that meets it;
2. delta debugging: drop chunks of that set (halves, quarters, ... single nodes) while the budget stays met; where
   the backend times its candidates (TensorRT), the fastest candidate that met the budget is kept instead of the
   last one when it is faster (a smaller FP32 set need not be a faster engine);
3. merge islands: turn cheap low-precision nodes between FP32 regions FP32 where that removes Casts, if the budget
   is still met.
Each evaluated candidate is stored in `scratch` under the digest of its FP32 set: a search that was interrupted
resumes by replaying its decisions from those records, evaluating only what it had not reached. On TensorRT a
candidate's record also holds its latency (CUDA graph replay), so that the plan shows what each step costs.
With `max_evaluations` or `max_seconds` (a TensorRT candidate is a build of a minute or more), the search stops
refining once that many candidates were evaluated, or when the next one, taking as long as the last, would end past
that many seconds of evaluations: the seeds are still tried and the prefix still grows until one meets the budget,
then bisection, delta debugging and the island merge stop where the count or the time runs out, keeping the best
set met so far.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtpipe.errors import BuildError, StageError
from trtpipe.metrics import Budget, check_budgets
from trtpipe.precision.convert import Conversion, convert
from trtpipe.precision.emulate import emulate


@dataclass
class Evaluation:
    fp32: list[str]  # the candidate: nodes kept FP32 beyond the forced ones
    met: bool
    violations: dict[str, list[str]]
    errors: dict[str, dict]  # output -> error stats against the reference
    casts: int
    seconds: float
    build_nodes: list[str] = field(default_factory=list)  # the failed layer's ONNX nodes, when the build failed
    latency_ms: float | None = None  # median, where the backend times on the GPU


class Evaluator:
    """Candidate FP32 set -> Evaluation: convert, load on the backend, run on the reference inputs, check budgets.

    `emulate`: run the candidate with its low-precision tensors rounded explicitly (trtpipe.precision.emulate), for
    ONNX Runtime on the CPU, whose float16 would otherwise mostly compute and store in FP32.
    """

    def __init__(
        self,
        model,
        feeds: dict[str, np.ndarray],
        refs: dict[str, np.ndarray],
        budgets: dict[str, Budget],
        backend,
        scratch: Path,
        dtype: str = "float16",
        keep_io_types: bool = True,
        pins: Mapping[str, str] | None = None,
        emulate: bool = False,
        report: Callable[[str], None] = lambda message: None,
    ):
        self.model, self.feeds, self.refs, self.budgets = model, feeds, refs, budgets
        self.backend, self.dtype, self.keep_io_types = backend, dtype, keep_io_types
        self.pins = dict(pins or {})  # node -> why it is pinned FP32
        self.emulate = emulate
        self.records = scratch / "evaluations"
        self.records.mkdir(parents=True, exist_ok=True)
        self.report = report
        self.seen: dict[str, Evaluation] = {}  # the candidates this search has asked for, by digest, in order
        self.ran = 0  # evaluations run by this process (the rest came from `scratch`)

    def convert(self, fp32: Iterable[str], merge_cost: float | None = None) -> Conversion:
        wanted = dict.fromkeys(sorted(fp32), "search") | self.pins
        return convert(self.model, wanted, self.dtype, self.keep_io_types, merge_cost)

    def __call__(self, fp32: Iterable[str]) -> Evaluation:
        fp32 = sorted(set(fp32) - set(self.pins))
        digest = hashlib.sha256(json.dumps(fp32).encode()).hexdigest()[:24]
        if digest not in self.seen:
            record = self.records / f"{digest}.json"
            found = Evaluation(**json.loads(record.read_text())) if record.is_file() else None
            self.seen[digest] = found or self.evaluate(fp32, record)
        return self.seen[digest]

    def evaluate(self, fp32: list[str], record: Path) -> Evaluation:
        start = time.perf_counter()
        conversion = self.convert(fp32)
        path = record.with_suffix(".onnx")
        path.write_bytes((emulate(conversion.model) if self.emulate else conversion.model).SerializeToString())
        failure: StageError | None = None
        feeds = input_dtypes(conversion.model, self.feeds)
        try:
            session = self.backend.load(path)
            outputs = session.run(feeds)
        except StageError as e:  # e.g. TensorRT finds no kernel for a region with mixed precision constraints
            failure = e
        finally:
            path.unlink()
        latency = None
        if failure is not None:
            stats, violations = {}, {"build": [failure.message]}
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # overflowing candidates are expected
                stats, violations = check_budgets(outputs, self.refs, self.budgets)
            latency = gpu_latency(session, feeds)
        seconds = time.perf_counter() - start
        nodes = failure.nodes if isinstance(failure, BuildError) else []
        result = Evaluation(fp32, not violations, violations, stats, conversion.casts, seconds, nodes, latency)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result), default=float))
        tmp.replace(record)
        self.ran += 1
        self.report(f"evaluation {len(self.seen) + 1}: {len(fp32)} FP32 nodes, {result.casts} casts, {summary(result)}")
        return result

    def met(self, fp32: Iterable[str]) -> bool:
        return self(fp32).met

    def excess(self, fp32: Iterable[str]) -> float:
        """How far the candidate's worst error is over its budget (trtpipe.metrics.Budget.excess; inf: no outputs)."""
        errors = self(fp32).errors
        return max(b.excess(errors[name]) if name in errors else float("inf") for name, b in self.budgets.items())


def gpu_latency(session, feeds: dict[str, np.ndarray], iterations: int = 50) -> float | None:
    """Median milliseconds of a TensorRT session by CUDA graph replay; None for sessions that time nothing on a GPU
    (ONNX Runtime on the CPU says little about a GPU target)."""
    if not hasattr(session, "cuda_graph"):
        return None
    session.cuda_graph = True
    return float(np.median(session.time(feeds, iterations, warmup=5)))


def input_dtypes(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds in the model's input dtypes (float16 inputs when I/O types are not kept)."""
    from onnx import helper

    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return {k: v.astype(helper.tensor_dtype_to_np_dtype(types[k])) if k in types else v for k, v in feeds.items()}


def summary(result: Evaluation) -> str:
    if result.met:
        return "budget met"
    return "; ".join(f"{name}: {', '.join(v)}" for name, v in result.violations.items())


@dataclass
class SearchResult:
    fp32: dict[str, str]  # node kept FP32 by the search or a pin -> the step that chose it
    evaluation: Evaluation
    conversion: Conversion
    candidates: list[Evaluation]  # in the order the search asked for them, this run or an interrupted one before it
    ran: int  # of which this run evaluated

    @property
    def evaluations(self) -> int:
        return len(self.candidates)


def search(
    evaluate: Evaluator,
    ranking: list[str] | Callable[[], list[str]],
    merge_cost: float | None = 0.5,
    max_evaluations: int | None = None,
    max_seconds: float | None = None,
    seeds: Mapping[str, list[str]] | None = None,
) -> SearchResult:
    """`ranking`: candidate nodes, most sensitive first (every candidate should be there), or a function that computes
    it, called only when low precision everywhere but the pins and every seed miss the budget. `seeds`: name ->
    nodes."""
    base = buildable(evaluate)

    def met(fp32: list[str]) -> bool:
        return evaluate.met([*base, *fp32])

    def free(nodes: Iterable[str]) -> list[str]:
        return [n for n in nodes if n not in evaluate.pins and n not in base]

    def more() -> bool:
        spent = [e.seconds for e in evaluate.seen.values()]
        if max_evaluations is not None and len(spent) >= max_evaluations:
            return False
        return max_seconds is None or sum(spent) + spent[-1] <= max_seconds

    rank: dict[str, int] = {}
    chosen: list[str] = []
    step = "greedy"
    if not met([]):
        seeded = {name: free(nodes) for name, nodes in (seeds or {}).items()}
        if seed := next((name for name, nodes in seeded.items() if met(nodes)), None):
            step, chosen = f"seed {seed}", seeded[seed]
        else:
            ranked = free(ranking() if callable(ranking) else ranking)
            rank = {n: i + 1 for i, n in enumerate(ranked)}
            chosen = greedy(ranked, met, more, lambda fp32: evaluate.excess([*base, *fp32]))

    def why(nodes: Iterable[str]) -> dict[str, str]:
        return {n: "search:build" if n in base else f"search:{step}" + (f" (rank {rank[n]})" if n in rank else "")
                for n in nodes}

    steps = why([*base, *ddmin(chosen, met, more)])
    best = evaluate(steps)
    if (fastest := fastest_met(evaluate.seen.values())) and (best.latency_ms or float("inf")) > fastest.latency_ms:
        steps, best = why(fastest.fp32), fastest
    if merge_cost is not None and more():
        merged = [n for n, why in evaluate.convert(steps, merge_cost).fp32.items() if why == "merge-islands"]
        if merged:
            trial = evaluate([*steps, *merged])
            if trial.met and trial.casts < best.casts:
                steps |= dict.fromkeys(merged, "search:merge-islands")
                best = trial
    steps |= evaluate.pins
    return SearchResult(steps, best, evaluate.convert(steps), list(evaluate.seen.values()), evaluate.ran)


def fastest_met(evaluations: Iterable[Evaluation]) -> Evaluation | None:
    """The evaluation with the lowest latency among those that met the budget, where the backend timed them."""
    timed = [e for e in evaluations if e.met and e.latency_ms is not None]
    return min(timed, key=lambda e: e.latency_ms, default=None)


def buildable(evaluate: Evaluator) -> list[str]:
    """Nodes to keep FP32 so that low precision everywhere else builds: none, or those of the layer the backend
    failed on. Growing the FP32 set by sensitivity would rarely reach what the backend lacks a kernel for, one build
    per step (a DAB-DETR-R50 search on TensorRT 8.6 spent 13 minutes so before building all FP32): a second failure
    stops the search."""
    first = evaluate([])
    if "build" not in first.violations:
        return []
    failed = f"the low-precision candidate does not build on {evaluate.backend.name}: {first.violations['build'][0]}"
    if first.build_nodes:
        second = evaluate(first.build_nodes)
        if "build" not in second.violations:
            return first.build_nodes
        failed += f"; with its {len(first.build_nodes)} nodes FP32, again: {second.violations['build'][0]}"
    raise StageError(
        failed,
        hint="keep the failing region FP32 (fp32_nodes), relax the builder's constraints (builder: {constraints: "
        "prefer} or {constrain: fp32}), or replace the op the backend has no kernel for (fuse-plugins: {PATTERN: "
        "{trt-plugin: NAME}})",
    )


def greedy(
    ranked: list[str],
    met: Callable[[list[str]], bool],
    more: Callable[[], bool] = lambda: True,
    excess: Callable[[list[str]], float] = lambda fp32: 2.0,
) -> list[str]:
    """The shortest prefix of `ranked` that meets the budget: growing by the factor `excess` gives for the last prefix
    (its worst error over the budget), between 1.25 and 2, then bisection while `more()`."""
    if met([]):
        return []
    bad, good = 0, 1
    while not met(ranked[:good]):
        if good >= len(ranked):
            raise StageError(
                f"the budget is not met even with all {len(ranked)} candidate nodes in FP32",
                hint="the budget may be tighter than FP32 itself achieves against the reference: loosen it",
            )
        factor = min(2.0, max(1.25, excess(ranked[:good])))
        bad, good = good, min(max(good + 1, math.ceil(good * factor)), len(ranked))
    while good - bad > 1 and more():
        mid = (good + bad) // 2
        if met(ranked[:mid]):
            good = mid
        else:
            bad = mid
    return ranked[:good]


def ddmin(chosen: list[str], met: Callable[[list[str]], bool], more: Callable[[], bool] = lambda: True) -> list[str]:
    """Delta debugging: one pass over halves, then quarters, ... then single nodes, dropping each chunk whose removal
    keeps `met`, while `more()`. Ends 1-minimal (no single node can go) when removing nodes never helps accuracy."""
    n = 2
    while chosen:
        size = -(-len(chosen) // n)
        i = 0
        while i < len(chosen):
            if not more():
                return chosen
            rest = chosen[:i] + chosen[i + size :]
            if met(rest):
                chosen = rest
            else:
                i += size
        if size == 1:
            break
        n = min(2 * n, max(len(chosen), 1))
    return chosen


def load_ranking(path: Path | None, candidates: list[str]) -> list[str]:
    """The ranking file's node order, then any candidate it does not list, in graph order."""
    listed: list[Any] = json.loads(path.read_text())["nodes"] if path else []
    order = [entry["node"] for entry in listed if entry["node"] in set(candidates)]
    return order + [c for c in candidates if c not in set(order)]
