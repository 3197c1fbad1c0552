"""The `report` stage: one self-contained HTML page of the recipe's results (trtpipe.report draws it).

Cache key and the timeline. The key is the stage's inputs (the outputs it shows, each named with its producer), as
for any stage: when anything upstream of them changes, an input changes and the page is drawn again. The stage
timeline and the graph statistics come from the lock file, which is not an input: it changes on every run, so as part
of the key the page would never be cached, and an unchanged re-run must stay well under a second. So the page shows
the lock file as it stood when the page was drawn: the run that produced the results it shows, with the stages that
ran in that run and those taken from the cache. An unchanged re-run keeps that page, and so does a change to a stage
the page shows only through the lock file (one it follows by `after` alone). `trtpipe report RECIPE` draws the same
page from the lock file as it is now, at any time and without a report stage.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from trtpipe.stages.base import Context, Ref, Result, Stage, register


@register
class Report(Stage):
    """Sections, each shown when given: `plan` (precision-search plans), `compare` (errors and their histograms),
    `profile` (latency chart across profiles, the `top_layers` slowest layers), `layers` (build stages' engine
    layers). A field takes one reference or a list. The stage timeline and graph statistics per stage are always
    shown, from the lock file. Output `report`: report.html.
    """

    kind = "report"
    inputs = ("plan", "compare", "profile", "layers")
    outputs = ("report",)

    plan: list[Ref] = []
    compare: list[Ref] = []
    profile: list[Ref] = []
    layers: list[Ref] = []
    top_layers: int = Field(20, ge=1)

    @field_validator(*inputs, mode="before")
    @classmethod
    def one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    def refs(self) -> dict[str, str]:
        """One input slot per reference, `field:stage.output`, so the producers' names are part of the key."""
        return {f"{field}:{ref}": ref for field in self.inputs for ref in getattr(self, field)}

    def run(self, ctx: Context) -> Result:
        from trtpipe import lockfile, report

        lock = lockfile.read(lockfile.lock_path(ctx.recipe))
        files = {field: {ref: ctx.inputs[f"{field}:{ref}"] for ref in getattr(self, field)} for field in self.inputs}
        ctx.report("drawing the report")
        path = ctx.out("report.html")
        html = report.render(ctx.recipe, lock, report.load(files), self.top_layers, drawing=ctx.name)
        path.write_text(html, encoding="utf-8")  # not the locale's: a C locale cannot write it
        return Result({"report": path}, {"kib": round(path.stat().st_size / 1024, 1)})
