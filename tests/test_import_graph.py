"""No two modules of src/ehrjudge import each other, directly or round a longer loop: one module owns each idea.

The graph is read from the source with ast (nothing is imported). An edge A -> B is `import B` / `from B import x`
in A (x a submodule of B gives A -> B.x). Two graphs are checked:
- module-level imports (run when A is imported; `if TYPE_CHECKING:` blocks excluded): any cycle fails;
- every import, function-level ones included, except imports of a module's own ancestor package (Python has run
  `ehrjudge/engine/__init__.py` before `ehrjudge/engine/ray_partitions.py` anyway, so `from ehrjudge.engine import
  EngineConfig` there adds no dependency) and a package's lazy imports of its own submodules (its public front door,
  e.g. `ehrjudge.__getattr__` giving `Judge`).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "ehrjudge"


def modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package __init__)} of every module under src/ehrjudge."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known) -> list[str]:
    """The ehrjudge modules that one import statement of `module` names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    targets = []
    for name in names:
        while name and name not in known:  # `import ehrjudge.x.y` of a name inside a module -> that module
            name = name.rpartition(".")[0]
        if name and name != module:
            targets.append(name)
    return targets


def module_level(body) -> list:
    """The import statements that run when the module is imported (TYPE_CHECKING blocks left out)."""
    statements = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            statements.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                statements += module_level(node.body)
            statements += module_level(node.orelse)
        elif isinstance(node, ast.Try):
            statements += module_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                statements += module_level(handler.body)
    return statements


def import_graph(function_level: bool) -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for module, (path, is_package) in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        if function_level:
            statements = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        else:
            statements = module_level(tree.body)
        targets = {t for node in statements for t in imported(module, is_package, node, known)}
        if function_level:  # ancestor packages and a package's own submodules are not dependencies (see above)
            targets = {t for t in targets if not module.startswith(t + ".") and not t.startswith(module + ".")}
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan 1972), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(graph, found) -> str:
    return "; ".join(" ".join(f"{a}->{b}" for a in component for b in sorted(graph[a]) if b in component)
                     for component in found)


def test_cycle_finder_finds_a_known_loop_and_passes_a_chain():
    # Setup: a -> b -> c -> a is one loop; d -> e is a chain
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set()}
    # Assert
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"d": {"e"}, "e": set()}) == []


def test_graph_reads_relative_and_submodule_imports():
    # Setup
    graph = import_graph(function_level=True)
    # Assert: edges this tree is known to have (a from-import of a submodule, a lazy function-level import)
    assert "ehrjudge.judge.baseline_scorers" in graph["ehrjudge.judge.baseline"]
    assert "ehrjudge.engine" in graph["ehrjudge.scoring.realism"]
    assert len(graph) > 50


def test_no_cycle_of_module_level_imports():
    # Run
    graph = import_graph(function_level=False)
    found = cycles(graph)
    # Assert
    assert not found, f"modules importing each other at import time: {describe(graph, found)}"


def test_no_cycle_through_function_level_imports():
    # Run
    graph = import_graph(function_level=True)
    found = cycles(graph)
    # Assert
    assert not found, f"modules importing each other (lazy imports included): {describe(graph, found)}"
