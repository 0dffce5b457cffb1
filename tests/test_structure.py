"""The package's shape: no import cycles, one owner for each run-folder name and status word, documented packages."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "studio"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every studio module `path` imports, at the top or inside a function (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(n for n in names if n in known)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_module_imports_another_that_imports_it_back():
    mods = modules()
    graph = {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}
    # a package's __init__ is imported on the way to any of its modules: that is not a dependency of theirs on it
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals of a module, docstrings left out (prose may name things)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def places_writing(words: set[str], *, prefix: str | None = None) -> set[str]:
    places = set()
    for path in PACKAGE.rglob("*.py"):
        for line, value in string_constants(path):
            if value in words or (prefix and value.startswith(prefix)):
                places.add(f"{path.relative_to(ROOT)}:{line}")
    return places


def test_each_run_folder_name_is_written_in_one_place():
    from studio import runs

    names = {runs.RUN_META, runs.EVENTS, runs.CHECKPOINT_STATE, runs.TRAINABLE_FILE, runs.LORA_FILE}
    places = places_writing(names, prefix=runs.STEP_PREFIX)
    assert places and all(p.startswith("studio/runs.py:") for p in places), sorted(places)


def test_each_status_word_is_written_in_one_place():
    """The live statuses are RunStatus's alone; the terminal ones are the terminal events' kinds, which RunStatus
    takes its words from (event kinds also name events wherever events are read)."""
    from studio.runs import RunStatus

    places = places_writing({RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.PAUSED.value,
                             RunStatus.INTERRUPTED.value})
    assert places and all(p.startswith("studio/runs.py:") for p in places), sorted(places)


def test_every_package_says_what_it_is_for():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 6, f"{init.relative_to(ROOT)}: its docstring should say what the package is for"


def test_the_engine_never_imports_gradio():
    code = "import sys, studio.engine, studio.cli; assert 'gradio' not in sys.modules, 'gradio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_ui_tabs_import_only_the_kit_and_views():
    ui = PACKAGE / "ui"
    for tab in ui.glob("tab_*.py"):
        own = {m for m in imports_of(tab, set(modules())) if m.startswith("studio.ui")}
        assert own <= {"studio.ui", "studio.ui.kit", "studio.ui.views"}, f"{tab.name} imports {sorted(own)}"
