"""Static analysis of a playbook's step graph: successors, cycles and fan-in barriers.

Steps inside a cycle (a strongly connected component with more than one step, or a step with an
arc to itself) may run many times; every other step runs at most once. The barrier of a step
counts only *forward* incoming arcs, i.e. arcs from outside its component, so back-edges never
block it. Arcs that leave a cycle are decided when the cycle goes quiet.

A step no chain of arcs leads to from `start` never runs (dead code): its arcs are dead from the
start, so they never hold up the steps they lead to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from noetl.dsl.model import Playbook


@dataclass
class Graph:
    successors: dict[str, tuple[str, ...]]
    component: dict[str, int]  # step -> component id
    members: dict[int, tuple[str, ...]]
    cyclic: frozenset[int]  # components that form a cycle
    forward_in: dict[str, tuple[str, ...]]  # sources of arcs from other components
    exits: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # cyclic comp -> arcs out
    unreachable: frozenset[str] = frozenset()  # steps no arc path from `start` leads to

    def in_cycle(self, step: str) -> bool:
        return self.component[step] in self.cyclic

    def same_cycle(self, a: str, b: str) -> bool:
        comp = self.component[a]
        return comp in self.cyclic and comp == self.component[b]


def analyse(playbook: Playbook) -> Graph:
    steps = list(playbook.steps)
    successors: dict[str, tuple[str, ...]] = {}
    for name, step in playbook.steps.items():
        targets: list[str] = []
        if step.next is not None:
            for arc in step.next.arcs:
                if arc.step not in targets:
                    targets.append(arc.step)
        successors[name] = tuple(targets)

    component = _tarjan(steps, successors)
    members: dict[int, list[str]] = {}
    for name in steps:
        members.setdefault(component[name], []).append(name)
    cyclic = {comp for comp, names in members.items() if len(names) > 1 or names[0] in successors[names[0]]}
    forward: dict[str, list[str]] = {name: [] for name in steps}
    exits: dict[int, list[tuple[str, str]]] = {comp: [] for comp in cyclic}
    for source in steps:
        for target in successors[source]:
            if component[source] != component[target]:
                forward[target].append(source)
                if component[source] in cyclic:
                    exits[component[source]].append((source, target))
    return Graph(
        successors=successors,
        component=component,
        members={comp: tuple(names) for comp, names in members.items()},
        cyclic=frozenset(cyclic),
        forward_in={name: tuple(sources) for name, sources in forward.items()},
        exits={comp: tuple(arcs) for comp, arcs in exits.items()},
        unreachable=frozenset(steps) - _reachable("start", successors),
    )


def _reachable(root: str, successors: dict[str, tuple[str, ...]]) -> set[str]:
    """The steps a path of arcs leads to from `root` (itself included, when it exists)."""
    if root not in successors:
        return set()
    seen = {root}
    todo = [root]
    while todo:
        for target in successors.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _tarjan(nodes: list[str], successors: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Strongly connected components, iteratively (playbooks can be long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    counter = 0
    comp_id = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_pos = work.pop()
            if child_pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = successors.get(node, ())
            recurse = False
            for pos in range(child_pos, len(children)):
                child = children[pos]
                if child not in index:
                    work.append((node, pos + 1))
                    work.append((child, 0))
                    recurse = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if recurse:
                continue
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = comp_id
                    if member == node:
                        break
                comp_id += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return component
