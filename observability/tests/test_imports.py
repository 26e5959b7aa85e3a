"""The layers stay layers: no import circle among the application's modules, and nothing in
the app imports the project package back, but `db.py`, the one door to the database watchdog.

Imports inside functions count: a circle hidden in a function is still a circle (it only
moves the failure from import time to the first call).
"""

import ast
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("observability", "apm_platform")
# Where the app may reach into the project package: the watchdog's only door.
ALLOWED_UP = {("observability.db", "apm_platform.dbguard")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).parts
            if "tests" in rel or "migrations" in rel:
                continue  # tests import everything; migrations freeze their own SQL
            found[_module_name(path)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports, anywhere in its body."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                # `from observability import db` imports the module observability.db.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.split(".")[0] in PACKAGES:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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


class ImportGraphTests(SimpleTestCase):
    def test_the_walk_sees_function_level_imports_and_package_imports(self):
        graph = import_graph()
        self.assertIn("observability.rollups", graph["observability.analytics"])
        self.assertIn("apm_platform.dbguard", graph["observability.db"])  # imported inside functions

    def test_the_cycle_finder_finds_a_circle_through_three_modules(self):
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [["a", "b", "c"]])

    def test_no_module_imports_one_that_imports_it_back(self):
        self.assertEqual(cycles(import_graph()), [])

    def test_the_app_reaches_the_project_package_only_through_db(self):
        graph = import_graph()
        upward = sorted((name, target) for name, targets in graph.items() if name.startswith("observability")
                        for target in targets if target.startswith("apm_platform"))
        self.assertEqual(set(upward) - ALLOWED_UP, set())
