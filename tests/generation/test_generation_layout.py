"""The generation package's layout (issue 16 §5): subpackages whose imports point one way.

The flat layout had two import cycles, dodged by imports inside functions: `backend` <->
`backend_vllm`/`backend_openai`, and `concept_graph -> merge -> manifest -> run_config ->
concept_graph_reader -> concept_graph`. Every import counts here, at module level, inside a
function or under TYPE_CHECKING, because a cycle is one whichever way it is hidden. The order of
the layers themselves is the `generation-layers` contract of .importlinter (`lint-imports`, run by
`make test`).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import generation


def _generation_imports() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    graph = grimp.build_graph("generation", include_external_packages=False)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_module_of_generation_imports_itself_through_others():
    cycles = _cycles(_generation_imports())
    assert cycles == [], "import cycles in generation: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_of_generation_imports():
    names = [m.name for m in pkgutil.walk_packages(generation.__path__, "generation.")]
    for name in names:
        importlib.import_module(name)
    assert {"generation.engine", "generation.run", "generation.synthllm", "generation.text",
            "generation.models", "generation.corpus"} <= set(names)


def test_the_commands_and_the_engine_factory_import_no_engine():
    """`generation --help` and `import generation.engine` pay for no engine: the factory imports
    vllm's or the OpenAI client's module only when it builds that backend."""
    code = ("import sys, generation, generation.cli, generation.engine\n"
            "print(sorted(m for m in ('vllm', 'torch', 'transformers', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
