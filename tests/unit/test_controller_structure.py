"""The controller package's parts depend one way: no import cycles, no upward imports."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
CONTROLLER = SRC / "hypetunnel" / "controller"


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def controller_graph() -> dict[str, set[str]]:
    modules = {f"hypetunnel.controller.{p.stem}": p for p in CONTROLLER.glob("*.py")
               if p.stem != "__init__"}
    return {m: {i for i in imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_no_import_cycle_inside_the_controller_package() -> None:
    graph = controller_graph()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        assert m not in path, f"import cycle: {' -> '.join([*path, m])}"
        if m in done:
            return
        for dep in graph[m]:
            visit(dep, [*path, m])
        done.add(m)

    for m in graph:
        visit(m, [])


def test_the_parts_know_only_what_is_below_them() -> None:
    graph = controller_graph()
    c = "hypetunnel.controller."
    # Sessions know no fabric state, no role and no runtime; the fabric state knows no session;
    # nothing but the runtime knows the runtime.
    assert not graph[c + "session"] & {c + "fabric", c + "role", c + "runtime", c + "sessions"}
    assert not graph[c + "sessions"] & {c + "fabric", c + "role", c + "runtime"}
    assert not graph[c + "fabric"] & {c + "session", c + "sessions", c + "role", c + "runtime"}
    assert not graph[c + "role"] & {c + "session", c + "sessions", c + "fabric", c + "runtime"}
    assert not graph[c + "ports"] & {c + "session", c + "sessions", c + "fabric", c + "role",
                                     c + "runtime"}
    assert [m for m, deps in graph.items() if c + "runtime" in deps] == []


def test_the_controller_never_imports_the_api_or_the_daemon() -> None:
    for path in CONTROLLER.glob("*.py"):
        bad = {i for i in imports(path) if i.startswith(("hypetunnel.api", "hypetunnel.daemon",
                                                          "hypetunnel.cli"))}
        assert not bad, f"{path.name} imports {bad}"
