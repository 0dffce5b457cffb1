"""The entry points as they are started: `python app.py`'s address, and the Python version the package declares."""
from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import app
from app import launch_address

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flags, env, expected", [
    ((None, None), {}, {}),  # nothing set: Gradio's own defaults
    ((None, None), {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "9001"}, {}),  # Gradio reads its own
    ((None, None), {"SPACE_ID": "me/studio"}, {"server_name": "0.0.0.0"}),  # a Space listens everywhere
    ((None, None), {"SPACE_ID": "me/studio", "GRADIO_SERVER_NAME": "10.0.0.1"}, {}),  # unless Gradio's says otherwise
    ((None, None), {"SPACE_ID": "me/studio", "STUDIO_HOST": "10.0.0.2"}, {"server_name": "10.0.0.2"}),
    ((None, None), {"STUDIO_HOST": "10.0.0.2", "GRADIO_SERVER_NAME": "10.0.0.1"}, {"server_name": "10.0.0.2"}),
    ((None, None), {"PORT": "8080", "GRADIO_SERVER_PORT": "9001"}, {"server_port": 8080}),
    (("10.0.0.3", 7000), {"STUDIO_HOST": "10.0.0.2", "PORT": "8080", "GRADIO_SERVER_NAME": "10.0.0.1",
                          "GRADIO_SERVER_PORT": "9001", "SPACE_ID": "me/studio"}, {"server_name": "10.0.0.3", "server_port": 7000}),
    ((None, None), {"STUDIO_HOST": "", "PORT": ""}, {}),  # empty variables count as unset
])
def test_address_precedence_flags_then_studio_variables_then_gradio_variables(flags, env, expected):
    assert launch_address(*flags, env) == expected


def test_a_port_that_is_not_a_number_is_a_clear_error():
    with pytest.raises(ValueError, match="PORT='web'"):
        launch_address(None, None, {"PORT": "web"})


def test_main_hands_the_address_to_gradio(monkeypatch):
    import studio.engine
    import studio.ui.app

    launched = {}
    monkeypatch.setattr(studio.engine, "Studio", lambda *a, **k: None)
    monkeypatch.setattr(studio.ui.app, "serve", lambda studio, **kwargs: launched.update(kwargs))
    for key in ("SPACE_ID", "STUDIO_HOST", "PORT", "STUDIO_AUTH", "STUDIO_SHARED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9001")
    monkeypatch.setattr(sys, "argv", ["app.py", "--port", "7001"])
    app.main()
    assert launched == {"server_port": 7001, "auth": None}
    monkeypatch.setattr(sys, "argv", ["app.py"])
    launched.clear()
    app.main()
    assert launched == {"auth": None}  # GRADIO_SERVER_PORT is left to Gradio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_app_py_listens_on_gradio_server_port(tmp_path):
    port = _free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("STUDIO_", "GRADIO_")) and key not in ("PORT", "SPACE_ID")}
    env.update(GRADIO_SERVER_PORT=str(port), STUDIO_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(ROOT))
    log = (tmp_path / "app.log").open("w+")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.time() + 60, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        log.seek(0)
        assert status == 200, f"no page on port {port} (exit {proc.poll()}):\n{log.read()[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# Standard-library modules and names newer than some Python 3 (first version that has them). Not exhaustive: the
# additions this kind of code reaches for. A module here that the code imports raises the floor it needs.
NEWER_STDLIB = {
    "graphlib": (3, 9), "zoneinfo": (3, 9),
    "tomllib": (3, 11), "wsgiref.types": (3, 11), "typing.Self": (3, 11), "typing.LiteralString": (3, 11),
    "typing.Never": (3, 11), "typing.assert_never": (3, 11), "typing.reveal_type": (3, 11), "enum.StrEnum": (3, 11),
    "datetime.UTC": (3, 11), "asyncio.TaskGroup": (3, 11), "asyncio.timeout": (3, 11), "contextlib.chdir": (3, 11),
    "itertools.batched": (3, 12), "typing.override": (3, 12),
    "warnings.deprecated": (3, 13), "copy.replace": (3, 13),
    "annotationlib": (3, 14), "compression": (3, 14), "string.templatelib": (3, 14), "concurrent.interpreters": (3, 14),
}


def _uses(tree: ast.AST) -> set[str]:
    """Dotted names a module imports or reaches through an imported module (`itertools.batched`)."""
    names, modules = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
                top = alias.name.split(".")[0]
                modules[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            names.add(f"{modules[node.value.id]}.{node.attr}")
    return names


def _floor() -> tuple[int, int]:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    match = re.fullmatch(r">=\s*3\.(\d+)", spec.strip())
    assert match, f"requires-python = {spec!r}: expected a plain floor such as '>=3.11'"
    return 3, int(match.group(1))


def test_the_code_needs_no_python_newer_than_requires_python():
    floor = _floor()
    needs = {}
    for path in [ROOT / "app.py", *sorted((ROOT / "studio").rglob("*.py"))]:
        for name in _uses(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if name in NEWER_STDLIB and NEWER_STDLIB[name] > floor:
                needs.setdefault(f"{name} (Python {'.'.join(map(str, NEWER_STDLIB[name]))})", []).append(
                    str(path.relative_to(ROOT)))
    assert not needs, f"requires-python floor is {floor}, but the code uses: {needs}"
    assert sys.version_info[:2] >= floor  # the interpreter running the tests meets the floor too
    space = re.search(r'^python_version: "3\.(\d+)"', (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    assert space and (3, int(space.group(1))) >= floor  # the Space's Python (README front matter) too


def test_the_scan_sees_what_it_looks_for():
    uses = _uses(ast.parse("import tomllib\nimport itertools as it\nfrom typing import Self\nimport itertools\n"
                           "itertools.batched([], 2)\n"))
    assert {"tomllib", "typing.Self", "itertools.batched"} <= uses
