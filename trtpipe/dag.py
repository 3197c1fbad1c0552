"""The stage graph: edges from `after` and from input references; order is topological, ties in recipe order."""

from __future__ import annotations

import graphlib
import heapq

from trtpipe.stages import Stage


def dependencies(stage: Stage) -> list[str]:
    deps = list(stage.after)
    deps += [ref.split(".", 1)[0] for ref in stage.refs().values()]
    return list(dict.fromkeys(deps))


def find_cycle(stages: dict[str, Stage]) -> list[str] | None:
    sorter = graphlib.TopologicalSorter({name: dependencies(s) for name, s in stages.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        return list(reversed(e.args[1]))
    return None


def order(stages: dict[str, Stage]) -> list[str]:
    """Topological order that takes, at each step, the ready stage listed first in the recipe."""
    rank = {name: i for i, name in enumerate(stages)}
    sorter = graphlib.TopologicalSorter({name: dependencies(s) for name, s in stages.items()})
    sorter.prepare()
    ready: list[tuple[int, str]] = []
    result = []
    while sorter.is_active():
        for name in sorter.get_ready():
            heapq.heappush(ready, (rank[name], name))
        name = heapq.heappop(ready)[1]
        result.append(name)
        sorter.done(name)
    return result


def descendants(stages: dict[str, Stage], roots: set[str]) -> set[str]:
    found = set(roots)
    for name in order(stages):
        if any(dep in found for dep in dependencies(stages[name])):
            found.add(name)
    return found


def ancestors(stages: dict[str, Stage], roots: set[str]) -> set[str]:
    found = set(roots)
    for name in reversed(order(stages)):
        if name in found:
            found.update(dependencies(stages[name]))
    return found
