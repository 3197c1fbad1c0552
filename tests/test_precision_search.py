"""Sensitivity ranking and the FP32-set search on real ONNX Runtime runs; resuming an interrupted search."""

import json

import numpy as np
import onnx
import pytest

from tests.precision_graphs import box_refinement, planted_overflow, run
from trtpipe.backends.onnxruntime import OnnxRuntime
from trtpipe.data import save_reference
from trtpipe.errors import BuildError, StageError
from trtpipe.metrics import Budget
from trtpipe.precision import sensitivity
from trtpipe.precision.convert import analyze, prepare
from trtpipe.precision.rules import output_tail, tail_pins
from trtpipe.precision.search import Evaluator, ddmin, greedy, search

FEEDS = {"x": np.random.default_rng(2).uniform(-1, 1, (4, 16)).astype(np.float32)}
BUDGET = {"y": Budget(mean_rel=1e-2), "z": Budget(mean_abs=1e-2)}


def evaluator(scratch, backend=None, budget=BUDGET, pins=None):
    model = planted_overflow()
    backend = backend or OnnxRuntime()
    return Evaluator(model, FEEDS, run(model, FEEDS), budget, backend, scratch, pins=pins, emulate=True)


def ranked(order="sensitivity"):
    model = planted_overflow()
    ranking = sensitivity.rank(sensitivity.local(model, FEEDS, "float16"), analyze(model).candidates)
    return ranking if order == "sensitivity" else ranking[::-1]


def test_local_sensitivity_ranks_the_overflow_first():
    assert ranked()[0] == "/big/MatMul"
    assert sensitivity.local(planted_overflow(), FEEDS, "float16")["/big/MatMul"] == float("inf")


def test_output_sensitivity_ranks_the_overflow_first(tmp_path):
    model = planted_overflow()
    backend = OnnxRuntime()
    scores = sensitivity.output(
        model, FEEDS, run(model, FEEDS), "float16", lambda p, f: backend.load(p).run(f), 1, tmp_path, emulated=True
    )
    assert max(scores, key=scores.get) == "/big/MatMul" and scores["/big/MatMul"] == float("inf")
    assert all(np.isfinite(v) for n, v in scores.items() if n != "/big/MatMul")


@pytest.mark.parametrize("order", ["sensitivity", "reversed"])
def test_planted_overflow_ends_fp32_and_nothing_else(tmp_path, order):
    result = search(evaluator(tmp_path), ranked(order))
    assert result.fp32 == {"/big/MatMul": result.fp32["/big/MatMul"]}
    assert result.fp32["/big/MatMul"].startswith("search:greedy")
    assert result.evaluation.met and np.isfinite(result.evaluation.errors["y"]["max_abs"])
    assert result.conversion.fp32 == {"/big/MatMul": "search"}


def test_pins_stay_fp32(tmp_path):
    result = search(evaluator(tmp_path, pins={"/gate/Sigmoid": "pin"}), ranked())
    assert result.fp32 == {"/big/MatMul": result.fp32["/big/MatMul"], "/gate/Sigmoid": "pin"}


def test_the_searched_graph_is_its_best_candidate_byte_for_byte(tmp_path):
    """So that a TensorRT build of the search's output is the candidate's engine (trtpipe.trt.engines)."""
    evaluate = evaluator(tmp_path, pins={"/gate/Sigmoid": "pin"})
    result = search(evaluate, ranked())
    assert result.evaluation.fp32 == ["/big/MatMul"]
    candidate = evaluate.convert(result.evaluation.fp32).model
    assert result.conversion.model.SerializeToString() == candidate.SerializeToString()


def test_the_first_seed_that_meets_the_budget_replaces_the_greedy_prefix(tmp_path):
    seeds = {"fc1": ["/fc1/MatMul"], "overflow": ["/fc2/MatMul", "/big/MatMul"], "unused": ["/act/Relu"]}
    result = search(evaluator(tmp_path), ranked("reversed"), seeds=seeds)
    assert list(result.fp32) == ["/big/MatMul"] and result.fp32["/big/MatMul"].startswith("search:seed overflow")
    tried = [c.fp32 for c in result.candidates]
    assert tried[:3] == [[], ["/fc1/MatMul"], ["/big/MatMul", "/fc2/MatMul"]]
    assert ["/act/Relu"] not in tried and all(set(t) <= {"/big/MatMul", "/fc2/MatMul"} for t in tried[3:])


def test_a_seed_that_meets_the_budget_needs_no_ranking(tmp_path):
    """A recipe whose seed meets the budget runs no sensitivity (batch 8 of DAB-DETR-R50: minutes of ONNX Runtime)."""

    def ranking():
        raise AssertionError("ranking computed")

    result = search(evaluator(tmp_path), ranking, seeds={"overflow": ["/fc2/MatMul", "/big/MatMul"]})
    assert result.fp32 == {"/big/MatMul": "search:seed overflow"}


def test_seeds_that_miss_leave_the_greedy_search_to_it(tmp_path):
    seeded = search(evaluator(tmp_path / "seeded"), ranked(), seeds={"fc1": ["/fc1/MatMul"]})
    plain = search(evaluator(tmp_path / "plain"), ranked())
    assert seeded.fp32 == plain.fp32 and seeded.evaluations == plain.evaluations + 1


def test_seed_patterns_match_whole_node_names():
    from trtpipe.stages.precision_search import seed_nodes

    candidates = ["/fc1/MatMul", "/big/MatMul", "/fc2/MatMul"]
    assert seed_nodes({"s": [r"/fc\d/MatMul"]}, candidates) == {"s": ["/fc1/MatMul", "/fc2/MatMul"]}
    with pytest.raises(StageError, match="seed 'b' matches no candidate node"):
        seed_nodes({"a": ["/big/MatMul"], "b": ["MatMul"]}, candidates)


def test_unreachable_budget_is_an_error(tmp_path):
    with pytest.raises(StageError, match="not met even with all 5 candidate nodes"):
        search(evaluator(tmp_path, budget={"y": Budget(cosine=1.5)}), ranked())


class Interrupted(Exception):
    pass


class StopAfter:
    """ONNX Runtime, interrupted after `loads` model loads; remembers which candidates it loaded."""

    name = "onnxruntime"

    def __init__(self, loads: int):
        self.left = loads
        self.loaded: list[str] = []

    def env(self):
        return OnnxRuntime().env()

    def load(self, path, **options):
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        self.loaded.append(path.stem)
        return OnnxRuntime().load(path, **options)


class RefusesLowGates:
    """ONNX Runtime, except that a candidate whose Sigmoid gate runs in float16 "fails to build", naming the gate, as
    TensorRT does when it finds no kernel for a layer; with `everything`, any float16 node fails so."""

    name = "onnxruntime"

    def __init__(self, everything: bool = False):
        self.everything = everything

    def env(self):
        return OnnxRuntime().env()

    def load(self, path, **options):
        graph = onnx.load(str(path)).graph  # an emulated float16 node writes X/fp32, rounded by Casts after it
        low = [n.name for n in graph.node if n.op_type != "Cast" and n.output[0].endswith("/fp32")]
        failing = low if self.everything else [n for n in low if n == "/gate/Sigmoid"]
        if failing:
            raise BuildError(f"Could not find any implementation for node {failing[0]}", nodes=failing[:1])
        return OnnxRuntime().load(path, **options)


def test_the_layer_that_fails_to_build_stays_fp32(tmp_path):
    evaluate = evaluator(tmp_path, RefusesLowGates())
    failed = evaluate([])
    assert not failed.met and failed.build_nodes == ["/gate/Sigmoid"]
    assert failed.violations == {"build": ["Could not find any implementation for node /gate/Sigmoid"]}
    result = search(evaluate, ranked())
    assert result.evaluation.met
    assert result.fp32 == {"/gate/Sigmoid": "search:build", "/big/MatMul": result.fp32["/big/MatMul"]}


def test_a_candidate_that_still_does_not_build_stops_the_search(tmp_path):
    evaluate = evaluator(tmp_path, RefusesLowGates(everything=True))
    with pytest.raises(StageError, match=r"does not build on onnxruntime: .*; with its 1 nodes FP32, again: ") as e:
        search(evaluate, ranked())
    assert "trt-plugin" in e.value.hint
    assert evaluate.ran == 2, "no ranking, no further candidates"


def test_interrupted_search_resumes_without_evaluating_anything_twice(tmp_path):
    ranking = ranked("reversed")  # the longest search: every node added, then removed again
    whole = search(evaluator(tmp_path / "whole"), ranking)
    k = whole.evaluations // 2
    first = StopAfter(k)
    with pytest.raises(Interrupted):
        search(evaluator(tmp_path / "resumed", first), ranking)
    assert len(first.loaded) == k == len(list((tmp_path / "resumed/evaluations").glob("*.json")))

    second = StopAfter(10**6)
    resumed = search(evaluator(tmp_path / "resumed", second), ranking)
    assert not set(first.loaded) & set(second.loaded)
    assert len(second.loaded) == resumed.ran == whole.evaluations - k
    assert resumed.fp32 == whole.fp32 and resumed.evaluations == whole.evaluations


def test_greedy_finds_the_shortest_meeting_prefix():
    calls = []

    def met(fp32):
        calls.append(len(fp32))
        return {"c", "f"} <= set(fp32)

    assert greedy(list("abcdefghij"), met) == list("abcdef")
    assert calls == [0, 1, 2, 4, 8, 6, 5]


def test_greedy_grows_by_a_quarter_after_a_near_miss():
    calls = []
    ranking = [f"n{i}" for i in range(200)]

    def met(fp32):
        calls.append(len(fp32))
        return len(fp32) >= 70

    assert greedy(ranking, met, excess=lambda fp32: 1.05 if len(fp32) >= 60 else 10.0) == ranking[:70]
    assert calls == [0, 1, 2, 4, 8, 16, 32, 64, 80, 72, 68, 70, 69]


def test_budget_excess_is_the_worst_error_over_its_limit():
    budget = Budget(mean_abs=1e-3, max_abs=3e-3, cosine=0.995)
    assert budget.excess({"mean_abs": 2e-3, "max_abs": 1e-3, "cosine": 0.999}) == pytest.approx(2.0)
    assert budget.excess({"mean_abs": 5e-4, "max_abs": 1e-3, "cosine": 0.98}) == pytest.approx(4.0)
    assert budget.excess({"mean_abs": 0.0, "max_abs": 0.0, "cosine": 1.0, "finite": False}) == float("inf")
    assert Budget(max_abs=0.0).excess({"max_abs": 0.0}) == 0.0 and Budget().excess({"max_abs": 1.0}) == 0.0


def test_greedy_stops_bisecting_when_told_and_keeps_a_meeting_prefix():
    calls = []

    def met(fp32):
        calls.append(len(fp32))
        return {"c", "f"} <= set(fp32)

    assert greedy(list("abcdefghij"), met, more=lambda: len(calls) < 6) == list("abcdef")
    assert calls == [0, 1, 2, 4, 8, 6]
    calls.clear()
    assert greedy(list("abcdefghij"), met, more=lambda: len(calls) < 5) == list("abcdefgh")
    assert calls == [0, 1, 2, 4, 8]


def test_max_evaluations_bounds_the_refining_and_replays_alike(tmp_path):
    ranking = ranked("reversed")
    whole = search(evaluator(tmp_path / "whole"), ranking)
    bounded = search(evaluator(tmp_path / "bounded"), ranking, max_evaluations=4)
    assert bounded.evaluation.met and "/big/MatMul" in bounded.fp32
    assert bounded.evaluations < whole.evaluations and len(bounded.fp32) > len(whole.fp32)
    again = search(evaluator(tmp_path / "bounded"), ranking, max_evaluations=4)
    assert again.ran == 0 and again.fp32 == bounded.fp32
    assert search(evaluator(tmp_path / "whole"), ranking, max_evaluations=whole.evaluations).fp32 == whole.fp32


def test_max_seconds_bounds_the_refining_by_what_the_candidates_took(tmp_path):
    ranking = ranked("reversed")
    whole = search(evaluator(tmp_path), ranking)
    for record in (tmp_path / "evaluations").glob("*.json"):
        record.write_text(json.dumps(json.loads(record.read_text()) | {"seconds": 10.0}))
    timed = search(evaluator(tmp_path), ranking, max_seconds=40.0)  # a 5th candidate would end at 50 s
    counted = search(evaluator(tmp_path), ranking, max_evaluations=4)
    assert timed.ran == 0 and timed.evaluations == counted.evaluations < whole.evaluations
    assert timed.fp32 == counted.fp32 and timed.evaluation.met


def test_the_fastest_candidate_that_met_the_budget_is_kept(tmp_path):
    """ONNX Runtime times nothing; latencies as TensorRT would record them, on the records a search replays."""
    ranking = ranked("reversed")
    smallest = search(evaluator(tmp_path), ranking)
    records = {path: json.loads(path.read_text()) for path in (tmp_path / "evaluations").glob("*.json")}
    largest = max((r for r in records.values() if r["met"]), key=lambda r: len(r["fp32"]))
    assert len(largest["fp32"]) > len(smallest.evaluation.fp32)
    for path, record in records.items():
        path.write_text(json.dumps(record | {"latency_ms": 1.0 if record is largest else 2.0}))
    fastest = search(evaluator(tmp_path), ranking)
    assert fastest.ran == 0 and fastest.evaluation.fp32 == largest["fp32"] and fastest.evaluation.latency_ms == 1.0
    assert set(fastest.fp32) == set(largest["fp32"]) and fastest.conversion.fp32.keys() == fastest.fp32.keys()


def test_ddmin_keeps_only_what_is_needed():
    assert ddmin(list("abcdefghij"), lambda s: {"c", "h"} <= set(s)) == ["c", "h"]
    assert ddmin(list("abc"), lambda s: True) == []
    assert ddmin(list("abcd"), lambda s: True, more=lambda: False) == list("abcd")


# ---------------------------------------------------------------- the stages


@pytest.fixture
def overflow_recipe(tmp_path):
    from trtpipe.recipe import load

    model = planted_overflow()
    onnx.save(model, str(tmp_path / "m.onnx"))
    save_reference(tmp_path / "ref.npz", FEEDS, run(model, FEEDS))
    (tmp_path / "r.yaml").write_text(
        "name: t\nmodel: {onnx: m.onnx}\ninputs:\n  x: {shape: [4, 16]}\nstages:\n"
        "  sensitivity: {uses: sensitivity, method: output}\n"
        "  search:\n    uses: precision-search\n    ranking: sensitivity.ranking\n"
        "    budget: {y: {mean_rel: 1.0e-2}, z: {mean_abs: 1.0e-2}}\n"
    )
    return load(tmp_path / "r.yaml")


def run_stage(recipe, name, inputs, tmp_path):
    from trtpipe.stages import Context

    work = tmp_path / name
    work.mkdir()
    ctx = Context(name, recipe, inputs, work, tmp_path / "cache", f"key-{name}")
    return recipe.stage(name).run(ctx)


def test_sensitivity_and_search_stages(overflow_recipe, tmp_path):
    common = {"model": tmp_path / "m.onnx", "reference": tmp_path / "ref.npz"}
    ranking = run_stage(overflow_recipe, "sensitivity", common, tmp_path).outputs["ranking"]
    nodes = json.loads(ranking.read_text())["nodes"]
    assert nodes[0] == {"node": "/big/MatMul", "op": "MatMul", "module": "big", "score": "inf"}

    result = run_stage(overflow_recipe, "search", common | {"ranking": ranking}, tmp_path)
    metrics = result.metrics
    assert metrics["budget_met"] and metrics["fp32_nodes"] == 1
    assert metrics["casts"] <= metrics["casts_onnxconverter_common"]
    assert metrics["evaluations"] == metrics["evaluations_run"] > 0
    plan = json.loads(result.outputs["plan"].read_text())
    assert [(n["node"], n["module"]) for n in plan["fp32_nodes"]] == [("/big/MatMul", "big")]
    assert plan["budget"] == {"y": {"mean_rel": 0.01}, "z": {"mean_abs": 0.01}}
    assert plan["backend"]["name"] == "onnxruntime" and plan["reference"] == "reference"
    first, found = plan["candidates"][:2]  # in the order evaluated: FP16 everywhere, then the top of the ranking
    assert (first["fp32_nodes"], first["met"], found["fp32_nodes"], found["met"]) == (0, False, 1, True)
    assert first["violations"] and found["errors"]["z"]["mean_abs"] == plan["errors"]["z"]["mean_abs"]
    assert len(plan["candidates"]) == plan["evaluations"]
    assert {c["latency_ms"] for c in plan["candidates"]} == {None}, "ONNX Runtime candidates are not timed"
    onnx.checker.check_model(onnx.load(str(result.outputs["model"])), full_check=True)


def test_search_stage_without_ranking_or_reference(overflow_recipe, tmp_path):
    result = run_stage(overflow_recipe, "search", {"model": tmp_path / "m.onnx"}, tmp_path)
    plan = json.loads(result.outputs["plan"].read_text())
    assert plan["reference"] == "onnxruntime fp32" and result.metrics["budget_met"]
    assert [n["node"] for n in plan["fp32_nodes"]] == ["/big/MatMul"]


def test_output_tail_is_what_follows_the_last_weighted_layer():
    model = box_refinement(layers=2)
    assert output_tail(prepare(model), "logits") == ["/cls/Add"]
    assert output_tail(prepare(model), "boxes") == [
        "/ref/Sigmoid", "/layer0/Sub", "/layer0/Div", "/layer0/Log", "/layer0/Add", "/layer0/Sigmoid",
        "/layer1/Sub", "/layer1/Div", "/layer1/Log", "/layer1/Add", "/layer1/Sigmoid",
    ]  # fmt: skip
    with pytest.raises(StageError, match="no graph output named 'box'") as e:
        output_tail(prepare(model), "box")
    assert "boxes" in e.value.hint


def test_pinned_box_tail_removes_the_rounding_that_refinement_adds_up(tmp_path):
    """float16 everywhere (emulated) against FP32 with the tail of `boxes` pinned: the boxes' error falls by far more
    than the logits' moves."""
    model = box_refinement()
    feeds = {"x": np.random.default_rng(2).standard_normal((300, 32)).astype(np.float32)}
    budget = {"boxes": Budget(mean_abs=1.0), "logits": Budget(mean_abs=1.0)}
    pins = tail_pins(prepare(model), ["boxes"])
    assert set(pins.values()) == {"output-tail:boxes"} and len(pins) == 1 + 5 * 6

    def errors(pins, scratch):
        scratch.mkdir()
        evaluate = Evaluator(model, feeds, run(model, feeds), budget, OnnxRuntime(), scratch, pins=pins, emulate=True)
        return {name: stats["mean_abs"] for name, stats in evaluate([]).errors.items()}

    low, pinned = errors(None, tmp_path / "low"), errors(pins, tmp_path / "pinned")
    assert pinned["boxes"] < low["boxes"] / 10
    assert pinned["logits"] == pytest.approx(low["logits"], rel=0.5)


def test_ranking_is_computed_only_when_low_precision_everywhere_misses_the_budget(tmp_path):
    def ranking():
        raise AssertionError("ranked although FP16 everywhere meets the budget")

    loose = {"z": Budget(mean_abs=1.0)}  # y overflows in FP16: no budget on it
    result = search(evaluator(tmp_path / "loose", budget=loose), ranking, merge_cost=None)
    assert result.fp32 == {} and result.evaluations == 1
    asked = []
    result = search(evaluator(tmp_path / "tight"), lambda: asked.append(1) or ranked(), merge_cost=None)
    assert asked == [1] and "/big/MatMul" in result.fp32


def box_search_plan(tmp_path, params: str) -> tuple[dict, dict]:
    """The search stage with `params` on two layers of box refinement: (metrics, {FP32 node: why})."""
    from trtpipe.recipe import load

    onnx.save(box_refinement(layers=2), str(tmp_path / "m.onnx"))
    (tmp_path / "r.yaml").write_text(
        "name: t\nmodel: {onnx: m.onnx}\ninputs:\n  x: {shape: [300, 32]}\nstages:\n"
        f"  search: {{uses: precision-search, {params}}}\n"
    )
    result = run_stage(load(tmp_path / "r.yaml"), "search", {"model": tmp_path / "m.onnx"}, tmp_path)
    plan = json.loads(result.outputs["plan"].read_text())
    return result.metrics, {n["node"]: n["chosen_by"] for n in plan["fp32_nodes"]}


def test_search_stage_pins_the_output_tail_and_says_why(tmp_path):
    metrics, chosen = box_search_plan(tmp_path, "budget: {boxes: {mean_abs: 1.0e-4}}, output_tails: [boxes]")
    assert metrics["budget_met"] and metrics["evaluations"] == 1
    constant = ["/ref/Sigmoid", "/layer0/Sub", "/layer0/Div", "/layer0/Log"]  # of the anchors alone: FP32 anyway
    tail = ["/layer0/Add", "/layer0/Sigmoid", *(f"/layer1/{op}" for op in ("Sub", "Div", "Log", "Add", "Sigmoid"))]
    assert chosen == dict.fromkeys(constant, "shape-computation") | dict.fromkeys(tail, "output-tail:boxes")


def test_search_stage_pins_nodes_by_regular_expression(tmp_path):
    _, chosen = box_search_plan(tmp_path, "budget: {boxes: {mean_abs: 1.0}}, fp32_nodes: ['/layer1/(Add|Sigmoid)']")
    assert {n for n, why in chosen.items() if why == "pin"} == {"/layer1/Add", "/layer1/Sigmoid"}


def test_search_stage_keys_its_builders_plugins_by_the_recipe_folder(tmp_path):
    from trtpipe.recipe import load

    (tmp_path / "r.yaml").write_text(
        "name: t\nmodel: {onnx: m.onnx}\ninputs:\n  x: {shape: [2, 16]}\nstages:\n"
        "  search: {uses: precision-search, budget: {y: {mean_abs: 1.0}}, builder: {plugins: [lib/p.so]}}\n"
    )
    recipe = load(tmp_path / "r.yaml")
    assert recipe.stage("search").key_files(recipe) == {"plugin:lib/p.so": tmp_path / "lib/p.so"}
