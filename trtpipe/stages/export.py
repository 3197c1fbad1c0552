from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from trtpipe.errors import StageError, needs, one_line
from trtpipe.stages.base import Context, Result, Stage, register

TORCHSCRIPT_MAX_OPSET = 20
DYNAMO_MIN_OPSET = 18


@register
class Export(Stage):
    """The recipe's torch factory -> ONNX, checked with onnx.checker and against torch in ONNX Runtime.

    The factory convention is in trtpipe.models. Named dims of the recipe inputs become dynamic axes. ONNX Runtime
    runs at each distinct min/opt/max input shape; an element fails when |ort - torch| > atol + rtol * |torch|.
    Output `reference` holds the opt-shape inputs and the torch FP32 outputs that later stages compare against.
    """

    kind = "export"
    outputs = ("model", "reference")
    requires = {"torch": "torch"}
    recipe_fields = ("model", "inputs")

    opset: int = Field(17, ge=9)
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    constant_folding: bool = True
    atol: float = Field(1e-4, ge=0)
    rtol: float = Field(1e-3, ge=0)

    @model_validator(mode="after")
    def opset_supported(self):
        if self.exporter == "torchscript" and self.opset > TORCHSCRIPT_MAX_OPSET:
            raise ValueError(f"the torchscript exporter goes up to opset {TORCHSCRIPT_MAX_OPSET}; use exporter: dynamo")
        if self.exporter == "dynamo" and self.opset < DYNAMO_MIN_OPSET:
            raise ValueError(f"the dynamo exporter emits opset >= {DYNAMO_MIN_OPSET}; use exporter: torchscript")
        return self

    def needs(self, recipe) -> dict[str, str]:
        return super().needs(recipe) | ({"onnxscript": "torch"} if self.exporter == "dynamo" else {})

    def env(self, recipe) -> dict:
        packages = ("torch", "transformers") + (("onnxscript",) if self.exporter == "dynamo" else ())
        return {p: installed_version(p) for p in packages}

    def key_files(self, recipe) -> dict[str, Path]:
        files = super().key_files(recipe)
        if source := factory_source(recipe.model.factory):
            files["factory"] = source
        return files

    def run(self, ctx: Context) -> Result:
        import time

        from trtpipe import data, onnxio

        spec = ctx.recipe.model
        if spec.factory is None:
            raise StageError("export needs a torch factory (model.factory); this recipe's model is an ONNX file",
                             hint="remove the export stage: the 'source' stage provides the model")
        module = build_module(spec.factory, spec.kwargs)
        feeds = data.make_inputs(ctx.recipe)
        input_names = forward_inputs(module, feeds)
        expected = torch_outputs(module, [feeds[n] for n in input_names])

        path = ctx.out("model.onnx")
        ctx.report(f"exporting with the {self.exporter} exporter, opset {self.opset}")
        start = time.perf_counter()
        notes = self.export(module, feeds, input_names, list(expected), ctx.recipe, path)
        seconds = time.perf_counter() - start
        model = onnxio.load(path, check=True)

        ctx.report("comparing ONNX Runtime with torch")
        diffs = self.compare(path, module, ctx.recipe, input_names, feeds, expected, mismatch_hint(notes))
        reference = data.save_reference(ctx.out("reference.npz"), feeds, expected)
        metrics = {
            "exporter": self.exporter,
            "export_s": round(seconds, 3),
            **onnxio.stats(model),
            "dynamic_axes": dynamic_axes(ctx.recipe, input_names),
            "max_abs": max(d["max_abs"] for shape in diffs.values() for d in shape.values()),
            "max_rel": max(d["max_rel"] for shape in diffs.values() for d in shape.values()),
            "diffs": diffs,
            "tracer_warnings": notes,
        }
        return Result({"model": path, "reference": reference}, metrics)

    def export(self, module, feeds, input_names, output_names, recipe, path: Path) -> list[str]:
        """Writes the ONNX file; returns the tracer's warnings (a traced Python value is baked into the graph)."""
        import warnings

        import torch

        args = tuple(torch.from_numpy(feeds[n]) for n in input_names)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if self.exporter == "torchscript":
                    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=self.opset,
                                      input_names=input_names, output_names=output_names,
                                      dynamic_axes=dynamic_axes(recipe, input_names),
                                      do_constant_folding=self.constant_folding)
                else:
                    self.export_dynamo(module, args, input_names, output_names, recipe, path)
            except Exception as e:
                raise StageError(f"torch.onnx.export ({self.exporter}, opset {self.opset}) failed: {one_line(e)}",
                                 hint="run with -v for the traceback") from e
        traced = [w for w in caught if w.category is torch.jit.TracerWarning]
        return sorted({f"{Path(w.filename).name}:{w.lineno}: {str(w.message).split('. ')[0]}" for w in traced})

    def export_dynamo(self, module, args, input_names, output_names, recipe, path: Path) -> None:
        import logging

        import onnx
        import torch

        dims = {}
        shapes = {}
        for name in input_names:
            spec = recipe.inputs[name]
            for axis, dim in enumerate(spec.shape):
                if isinstance(dim, str):
                    r = spec.dims[dim]
                    dims.setdefault(dim, torch.export.Dim(dim, min=r.min, max=r.max))
                    shapes.setdefault(name, {})[axis] = dims[dim]
        log = logging.getLogger("torch.onnx")  # quiet its warnings about optional torchvision ops
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(module, args, dynamo=True, opset_version=self.opset, input_names=input_names,
                                        output_names=output_names, dynamic_shapes=shapes or None,
                                        optimize=self.constant_folding, verbose=False)
        finally:
            log.setLevel(level)
        program.save(str(path), external_data=False)
        model = onnx.load(str(path))
        name_by_module(model)
        onnx.save(model, str(path))

    def compare(self, path: Path, module, recipe, input_names, feeds, expected, hint: str) -> dict[str, dict]:
        """Error stats of ONNX Runtime vs torch per input shape (opt, then min and max when they differ)."""
        from trtpipe import data
        from trtpipe.backends import get_backend
        from trtpipe.metrics import error_stats

        session = get_backend("onnxruntime").load(path)
        diffs, seen = {}, set()
        for which in ("opt", "min", "max"):
            inputs = feeds if which == "opt" else data.make_inputs(recipe, which)
            shapes = tuple(inputs[n].shape for n in input_names)
            if shapes in seen:
                continue
            seen.add(shapes)
            want = expected if which == "opt" else torch_outputs(module, [inputs[n] for n in input_names])
            where = f"at the {which} input shapes {[list(s) for s in shapes]}"
            try:
                got = session.run(inputs)
                stats = {name: error_stats(got[name], want[name]) for name in want}
            except Exception as e:
                raise StageError(f"ONNX Runtime fails {where}: {one_line(e)}", hint=hint) from e
            for name in want:
                self.check_close(name, got[name], want[name], stats[name], where, hint)
            diffs[which] = {name: {k: s[k] for k in ("max_abs", "max_rel")} for name, s in stats.items()}
        return diffs

    def check_close(self, name: str, got, want, stats: dict, where: str, hint: str) -> None:
        import numpy as np

        if not np.allclose(got, want, atol=self.atol, rtol=self.rtol, equal_nan=True):
            raise StageError(
                f"ONNX Runtime output '{name}' differs from torch {where}: max abs {stats['max_abs']:.3g}, "
                f"max rel {stats['max_rel']:.3g} (atol {self.atol:g}, rtol {self.rtol:g})",
                hint=hint,
            )


def mismatch_hint(tracer_warnings: list[str]) -> str:
    if not tracer_warnings:
        return "a model that draws random numbers differs between torch and ONNX Runtime; else raise atol/rtol"
    more = f" (and {len(tracer_warnings) - 1} more)" if len(tracer_warnings) > 1 else ""
    return f"the trace may have baked a Python value into the graph: {tracer_warnings[0]}{more}"


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def factory_source(factory: str | None) -> Path | None:
    """The factory module's file, found without importing it (its parent packages are imported)."""
    if factory is None:
        return None
    try:
        spec = importlib.util.find_spec(factory.split(":")[0])
    except Exception:  # a parent package that fails to import: run() reports why
        return None
    origin = spec.origin if spec else None
    return Path(origin) if origin and origin.endswith(".py") else None


def build_module(factory: str, kwargs: dict):
    import importlib

    import torch

    module_name, _, attr = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        hint = f"is it on the Python path? trtpipe's models need {needs('torch', 'torch')}"
        raise StageError(f"model factory '{factory}': cannot import {module_name}: {one_line(e)}",
                         hint=hint if isinstance(e, ModuleNotFoundError) else None) from e
    build = getattr(module, attr, None)
    if not callable(build):
        raise StageError(f"model factory '{factory}': {module_name} has no callable '{attr}'")
    try:
        model = build(**kwargs)
    except Exception as e:
        raise StageError(f"model factory '{factory}' raised {one_line(e)}",
                         hint=f"check model.kwargs {kwargs}" if kwargs else None) from e
    if not isinstance(model, torch.nn.Module):
        raise StageError(f"model factory '{factory}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def forward_inputs(module, feeds: dict) -> list[str]:
    """The recipe's input names in forward's order; they must be forward's leading parameters."""
    import inspect

    params = list(inspect.signature(module.forward).parameters)
    leading = params[: len(feeds)]
    if set(leading) != set(feeds):
        raise StageError(
            f"forward({', '.join(params)}) does not take the recipe inputs ({', '.join(feeds)}) first",
            hint="name the recipe's inputs after forward's parameters",
        )
    return leading


def torch_outputs(module, args: list) -> dict:
    """Runs the module; its outputs as arrays by name (module.output_names, else output_0, output_1, ...)."""
    import torch

    with torch.no_grad():
        try:
            result = module(*(torch.from_numpy(a) for a in args))
        except Exception as e:
            raise StageError(f"model forward fails on the recipe inputs: {one_line(e)}") from e
    tensors = result if isinstance(result, tuple | list) else (result,)
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise StageError(f"model output {i} is a {type(t).__name__}, not a tensor",
                             hint="forward must return a tensor or a tuple of tensors (see trtpipe.models)")
    names = tuple(getattr(module, "output_names", ())) or tuple(f"output_{i}" for i in range(len(tensors)))
    if len(names) != len(tensors) or len(set(names)) != len(names):
        raise StageError(f"model.output_names {list(names)} does not name its {len(tensors)} outputs one each")
    return {name: t.detach().numpy() for name, t in zip(names, tensors)}


def dynamic_axes(recipe, input_names: list[str]) -> dict[str, dict[int, str]]:
    """Input name -> {axis: dim name} for the named dims of the recipe's input shapes."""
    axes = {}
    for name in input_names:
        named = {i: d for i, d in enumerate(recipe.inputs[name].shape) if isinstance(d, str)}
        if named:
            axes[name] = named
    return axes


def name_by_module(model) -> None:
    """Names dynamo's nodes like the torchscript exporter does: torch module path, then op type.

    Dynamo names nodes after aten calls (node_linear_1) and keeps the module path in metadata.
    """
    import ast
    from collections import Counter

    taken = Counter()
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "['']"))[:-1]
        parts = [s[len(prev) + 1 :] if prev else s for prev, s in zip([""] + scopes, scopes) if s]
        base = "/" + "/".join(parts + [node.op_type])
        node.name = base if not taken[base] else f"{base}_{taken[base]}"
        taken[base] += 1
