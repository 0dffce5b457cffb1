"""What users type: every command line in README.md's code blocks, exactly as written.

Each `python -m studio ...` / `studio ...` line, and each `accelerate launch ... -m studio ...` / `torchrun ... -m
studio ...` line (several processes), is parsed by the CLI's real parser, and every line that finishes in
seconds on the built-in model is run, verbatim and in README order, as `python -m studio ...` (under its launcher,
as `python -m accelerate...` / `python -m torch.distributed.run`) in a temporary folder
laid out like the repository root (its `assets/` copied in, STUDIO_HOME a temporary folder). `python -c` lines in
the same blocks (the inpaint mask) and `python -m studio.world.flow_bases` lines (the tiny FLUX.1 later lines train
on) run too. The set-up commands (`bash .ci/setup ...`) are neither parsed nor run.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studio.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

PARSE_ONLY = {  # a part of the line -> why that line is only parsed, not run
    "train --demo": "the demo's full recipe: 600 steps and 50 class images, about 2 minutes",
    "--base-model stable-diffusion-v1-5/": "downloads Stable Diffusion 1.5 from the hub (4 GB; no network in tests)",
    "torchrun --nproc_per_node 4": "four processes: the accelerate line before it runs the same launch on two "
                                   "(and tests/training/test_distributed.py runs torchrun itself)",
    "--base-model black-forest-labs/": "downloads FLUX.1-dev from the hub (gated, 30 GB) and needs a CUDA GPU",
}
# Module lines that run too: they make what later lines train on (the tiny FLUX.1 of studio.world.flow_bases).
MODULE_LINES = ("python -m studio.world.flow_bases ",)
LAUNCHERS = {  # a launcher's command -> how this interpreter runs it (its console script's module)
    "accelerate": ["-m", "accelerate.commands.accelerate_cli"],
    "torchrun": ["-m", "torch.distributed.run"],
}


def readme_lines() -> list[str]:
    """Command lines from README.md's code blocks (4-space indented or fenced), backslash continuations joined."""
    lines, fenced, joined = [], False, ""
    for raw in README.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or raw.startswith("    ") or joined):
            continue
        joined += raw.strip()
        if joined.endswith("\\"):
            joined = joined[:-1].rstrip() + " "
            continue
        if joined.startswith(("python -m studio ", "studio ", "python -c ", *MODULE_LINES)) or (
                joined.split(" ")[0] in LAUNCHERS and " -m studio " in joined):
            lines.append(joined)
        joined = ""
    return lines


def studio_argv(line: str) -> list[str] | None:
    """The arguments after `python -m studio` / `studio`; None for other lines."""
    words = shlex.split(line, comments=True)
    if words[:3] == ["python", "-m", "studio"]:
        return words[3:]
    if words[0] in LAUNCHERS:
        at = words.index("-m")
        return words[at + 2:] if words[at + 1] == "studio" else None
    return words[1:] if words[0] == "studio" else None


def command_of(line: str) -> list[str]:
    """The line as this interpreter runs it: `python` is sys.executable, a launcher its module, the rest verbatim."""
    words = shlex.split(line, comments=True)
    if words[0] in LAUNCHERS:
        return [sys.executable, *LAUNCHERS[words[0]], *words[1:]]
    argv = studio_argv(line)
    return [sys.executable, "-m", "studio", *argv] if argv is not None else [sys.executable, *words[1:]]


def line_id(line: str) -> str:
    argv = studio_argv(line)
    launcher = shlex.split(line, comments=True)[0]
    prefix = f"{launcher} " if launcher in LAUNCHERS else ""
    return prefix + (" ".join(argv[:3])[:40] if argv is not None else " ".join(shlex.split(line)[:2]))


def parse_only_reason(line: str) -> str | None:
    return next((why for part, why in PARSE_ONLY.items() if part in line), None)


LINES = readme_lines()
STUDIO_LINES = [line for line in LINES if studio_argv(line) is not None]


def test_the_readme_lines_are_found_and_cover_every_command():
    assert {studio_argv(line)[0] for line in STUDIO_LINES} >= {"train", "generate", "compare", "inpaint", "presets", "curate"}
    assert not any("setup" in line for line in LINES)  # `bash .ci/setup && ...` is not a studio line
    # the form that used to break: --base-model after the command's name
    assert any(argv.index("--base-model") > 0 for argv in map(studio_argv, STUDIO_LINES) if "--base-model" in argv)
    for part in PARSE_ONLY:  # no stale exemptions: each names exactly one README line
        assert sum(part in line for line in LINES) == 1, part
    assert len([line for line in LINES if parse_only_reason(line) is None]) >= 7


@pytest.mark.parametrize("line", STUDIO_LINES, ids=line_id)
def test_every_readme_command_parses(line, capsys):
    try:
        args = _parser().parse_args(studio_argv(line))
    except SystemExit:
        pytest.fail(f"README line does not parse: {line}\n{capsys.readouterr().err}")
    assert args.command == studio_argv(line)[0]


EXPECT = {  # what each command must leave behind, beyond exit status 0
    "presets": lambda cwd, out: "object-lora:" in out and "demo-full:" in out,
    "curate": lambda cwd, out: {json.loads(row)["accepted"] for row in out.splitlines()} == {True},
    "train": lambda cwd, out: True,  # its output folder: trained_as_asked
    "generate": lambda cwd, out: (cwd / "out/generate-p0-s1.png").is_file(),
    "compare": lambda cwd, out: True,  # its grid: drew_as_asked
    "inpaint": lambda cwd, out: (cwd / "out/inpaint-p0-s0.png").is_file(),
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Runs every runnable README line in order (later lines use earlier lines' outputs) in a copy of the repo root."""
    cwd = tmp_path_factory.mktemp("readme-cwd")
    for folder in ("assets/builtin-model", "assets/demo-subject", "assets/second-subject"):
        shutil.copytree(ROOT / folder, cwd / folder)  # copies: a command that wrote there would not touch the repo
    shutil.copy(ROOT / "assets/two-subjects.toml", cwd / "assets")
    env = {key: value for key, value in os.environ.items() if not key.startswith("STUDIO_")}
    env.update(STUDIO_HOME=str(tmp_path_factory.mktemp("studio-home")), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    results = {}
    for line in LINES:
        if parse_only_reason(line):
            continue
        results[line] = (subprocess.run(command_of(line), cwd=cwd, env=env, capture_output=True, text=True,
                                        timeout=300), cwd)
    return results


@pytest.mark.parametrize("line", [line for line in LINES if not parse_only_reason(line)], ids=line_id)
def test_readme_line_runs_verbatim(line, ran):
    done, cwd = ran[line]
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{line}\n{done.stderr[-3000:]}"
    argv = studio_argv(line)
    if argv is not None:
        assert EXPECT[argv[0]](cwd, done.stdout), f"{line}\n{done.stdout[-2000:]}"
    if argv is not None and argv[0] == "train":
        trained_as_asked(line, cwd / argv[argv.index("--output") + 1], cwd)
    if argv is not None and argv[0] == "compare":
        drew_as_asked(argv, cwd, done.stdout)


def drew_as_asked(argv: list[str], cwd: Path, out: str) -> None:
    """A compare line left its grid, with a picture per model, prompt and seed."""
    args = _parser().parse_args(argv)
    assert (cwd / args.out).is_file()
    assert f"{len(args.model) * len(args.prompt) * len(args.seed or [0])} pictures" in out, out


def trained_as_asked(line: str, run: Path, cwd: Path) -> None:
    """Each line left the files its method writes (a LoRA; textual inversion's embedding), a concepts line trained
    each of its subjects, and a launcher's line trained one run on as many processes as it asked for."""
    config = json.loads((run / "config.json").read_text())
    method = config["config"]["method"]
    if method in ("lora", "pivotal"):
        assert (run / "output" / "pytorch_lora_weights.safetensors").is_file(), line
    if method in ("textual_inversion", "pivotal"):
        assert (run / "output" / "learned_embeds.safetensors").is_file(), line
    words = shlex.split(line)
    if "--concepts" in words:
        import tomllib

        tables = tomllib.loads((cwd / words[words.index("--concepts") + 1]).read_text())["concept"]
        assert [s["identifier"] for s in config["subjects"]] == [t["identifier"] for t in tables], line
    if words[0] in LAUNCHERS:
        asked = int(words[words.index("--num_processes" if words[0] == "accelerate" else "--nproc_per_node") + 1])
        assert json.loads((run / "config.json").read_text())["distributed"]["processes"] == asked
