"""`python -m studio` / `studio`: the engine headless, through the same Studio facade as the app.

    studio train --images DIR --identifier sks --class-noun dog --preset object-lora --output DIR
    studio train --concepts concepts.toml --preset object-lora --output DIR   (several subjects)
    studio generate --model DIR|base --prompt "a photo of sks dog on the beach" --out DIR
    studio compare --model base --model DIR --prompt "..." --prompt "..." --out grid.png
    studio inpaint --model DIR --image photo.png --mask mask.png --prompt "..." --out DIR
    studio score RUN_DIR [--checkpoint step-000200] [--json] [--scorer-model ID]
    studio presets | studio curate DIR --json
--base-model, --base-config, --home, --device and --allow-pickle go before or after the command's name.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def _global_options(parser: argparse.ArgumentParser, suppress: bool = False) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name. The copy each subcommand gets has
    SUPPRESS defaults: an option the user did not repeat there leaves the value given before the command alone."""
    unset = {"default": argparse.SUPPRESS} if suppress else {}
    parser.add_argument("--home", **unset, help="studio folder for caches (default: $STUDIO_HOME or ~/.dreambooth-studio)")
    parser.add_argument("--base-model", **unset, help="diffusers folder, .safetensors file or hub id (default: the built-in model)")
    parser.add_argument("--base-config", **unset, help="diffusers config folder for a single-file model (needed offline)")
    parser.add_argument("--allow-pickle", action="store_true", **unset,
                        help="allow .ckpt/.bin base models (they can run code: trusted files only)")
    parser.add_argument("--device", **unset, help="cuda, mps or cpu (default: the best available)")
    return parser


def _parser() -> argparse.ArgumentParser:
    p = _global_options(argparse.ArgumentParser(prog="studio",
                                                description="DreamBooth Studio: teach a Stable Diffusion model a subject."))
    common = _global_options(argparse.ArgumentParser(add_help=False), suppress=True)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", parents=[common], help="train a subject (LoRA or full fine-tune)")
    t.add_argument("--images", type=Path, help="folder of 3-20 photos of the subject (captions: name.txt beside name.jpg)")
    t.add_argument("--demo", action="store_true", help="use the built-in demo subject's pictures and settings")
    t.add_argument("--concepts", type=Path, metavar="FILE",
                   help="several subjects in one run: a TOML file of [[concept]] tables, each with images, identifier "
                        "and class_noun (optional class_prompt, with_prior_preservation)")
    t.add_argument("--identifier", default=None, help="rare word naming your subject (default sks)")
    t.add_argument("--class-noun", default=None, help="what the subject is: dog, person, sunglasses...")
    t.add_argument("--preset", action="append", default=[], help="preset name (repeatable; later ones win)")
    t.add_argument("--output", type=Path, required=True, help="run folder: checkpoints, previews and the trained model")
    t.add_argument("--steps", type=int)
    t.add_argument("--resolution", type=int)
    t.add_argument("--no-prior", action="store_true", help="turn prior preservation off")
    t.add_argument("--num-class-images", type=int)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config value (JSON or text)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    t.add_argument("--json", action="store_true", help="print events as JSON lines instead of a progress bar")
    t.add_argument("--keep", choices=["pick", "last"], default="pick",
                   help="the run's output: the scorecard's pick (default; the last step's files go to output/last) "
                        "or the last step")
    t.add_argument("--scorer-model", action="append", default=[], metavar="ID",
                   help="scorer models for real base models: the DINOv2 one, then the CLIP one (hub ids or folders)")

    for name in ("generate", "compare", "inpaint"):
        g = sub.add_parser(name, parents=[common], help=f"{name} with a base model, a run folder or a LoRA file")
        g.add_argument("--model", action="append", default=[], help="base, a run folder, a checkpoint folder or a LoRA file")
        g.add_argument("--prompt", action="append", required=True)
        g.add_argument("--negative-prompt", default="")
        g.add_argument("--steps", type=int, default=25)
        g.add_argument("--guidance", type=float, default=7.5)
        g.add_argument("--seed", type=int, action="append", default=[])
        g.add_argument("--num-images", type=int, default=1)
        g.add_argument("--scheduler", default="default", help="default, ddim, dpm++, euler, euler_a")
        g.add_argument("--out", type=Path, required=True, help="output folder (compare: a .png path)")
        if name == "inpaint":
            g.add_argument("--image", type=Path, required=True)
            g.add_argument("--mask", type=Path, required=True, help="white = repaint")
            g.add_argument("--strength", type=float, default=0.85)

    s = sub.add_parser("score", parents=[common], help="score a run's checkpoints: subject fidelity, prompt fidelity, drift")
    s.add_argument("run_dir", type=Path, help="the run folder (what train --output named)")
    s.add_argument("--checkpoint", help="score only this checkpoint (e.g. step-000200) beside the base model")
    s.add_argument("--json", action="store_true", help="one JSON object: scorer, rows, best, why")
    s.add_argument("--scorer-model", action="append", default=[], metavar="ID",
                   help="the DINOv2 model, then the CLIP model (hub ids or folders); real base models only")
    s.add_argument("--use", metavar="STEP", help="then make this checkpoint the run's output (a step number, or 'last')")

    sub.add_parser("presets", parents=[common], help="list presets and what they set")
    c = sub.add_parser("curate", parents=[common], help="check a folder of photos")
    c.add_argument("folder", type=Path)
    c.add_argument("--subject-type", default="object", choices=["object", "face", "style"])
    c.add_argument("--json", action="store_true", help="one JSON object per file")
    return p


def _studio(args):
    from studio.engine import Studio

    return Studio(args.home, base_model=args.base_model, base_config=args.base_config, allow_pickle=args.allow_pickle,
                  device=args.device)


def _overrides(args) -> dict:
    values = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    for key, value in (("identifier", args.identifier), ("class_noun", args.class_noun), ("max_steps", args.steps),
                       ("resolution", args.resolution), ("num_class_images", args.num_class_images)):
        if value is not None:
            values[key] = value
    if args.no_prior:
        values["with_prior_preservation"] = False
    if getattr(args, "scorer_model", None):
        values["scorer_models"] = list(args.scorer_model)
    return values


def cmd_train(args) -> int:
    from studio.cli_progress import ProgressPrinter
    from studio.runs import RunStatus
    from studio.training.commands import RunCommands
    from studio.training.distributed import join_world

    studio = _studio(args)
    presets, overrides, images = list(args.preset), _overrides(args), args.images
    if args.demo:
        images, demo_presets, demo_overrides = studio.demo_settings()
        presets = presets or demo_presets
        overrides = {**demo_overrides, **overrides}
    concepts = []
    if args.concepts is not None:
        from studio.concepts import load_concepts

        clash = [flag for flag, value in (("--images", args.images), ("--identifier", args.identifier),
                                          ("--class-noun", args.class_noun), ("--demo", args.demo or None)) if value]
        if clash:
            raise ValueError(f"--concepts names each subject's photos, identifier and class noun; drop {', '.join(clash)}")
        concepts = load_concepts(args.concepts)
    elif images is None and not args.resume:
        raise ValueError("give --images DIR (or --demo, or --concepts FILE for several subjects)")
    commands = RunCommands()
    signal.signal(signal.SIGINT, lambda *_: commands.stop())  # Ctrl-C: save a checkpoint, then stop
    # `kill`, a container stop, or a launcher ending the run because another process died: the same, so the run
    # ends with its terminal event (stopped, or "another process of this run stopped") instead of mid-line
    signal.signal(signal.SIGTERM, lambda *_: commands.stop())
    world = join_world(args.device)  # one process, or this one's place under `accelerate launch` / `torchrun`
    printer = ProgressPrinter(json_lines=args.json)
    outcome = studio.train_folder(images, args.output, presets, overrides, resume=args.resume,
                                  emit=printer if world.is_main else None, commands=commands, world=world,
                                  concepts=concepts)
    printer.close()
    if not world.is_main:  # the main process reports for the run
        return {RunStatus.FINISHED: 0, RunStatus.CANCELLED: 130}.get(outcome.status, 1)
    if outcome.status == RunStatus.FINISHED:
        if args.keep == "last":
            studio.use_checkpoint_folder(args.output, None)
        _print_scorecard(studio, args.output, args.keep)
        print(f"done: {args.output / 'output'}", file=sys.stderr)
        return 0
    if outcome.status == RunStatus.CANCELLED:
        print(f"stopped; continue with: studio train --output {args.output} --resume", file=sys.stderr)
        return 130
    return 1


def _print_scorecard(studio, run_dir: Path, keep: str) -> None:
    """The scores the run measured as it trained, and what its output holds (on stderr: stdout may be JSON lines)."""
    card = studio.score_folder(run_dir, measure=False)
    if card.base is None and not card.rows:
        return
    print("\n" + card.table(), file=sys.stderr)
    if keep == "last" and card.pick is not None:
        print("output: the last step (--keep last)", file=sys.stderr)


def cmd_score(args) -> int:
    studio = _studio(args)
    card = studio.score_folder(args.run_dir, checkpoint=args.checkpoint, scorer_models=args.scorer_model)
    print(json.dumps(card.to_json()) if args.json else card.table())
    if args.use:
        from studio.runs import parse_step

        step = None if args.use == "last" else (parse_step(args.use) if not args.use.isdigit() else int(args.use))
        if args.use != "last" and step is None:
            raise ValueError(f"--use {args.use!r}: give a step number, a checkpoint name or 'last'")
        studio.use_checkpoint_folder(args.run_dir, step)
        if not args.json:
            print(f"output: {args.use}")
    return 0


def _settings(args, prompt: str, seed: int):
    from studio.inference.generate import DrawSettings

    return DrawSettings(prompt, args.negative_prompt, args.steps, args.guidance, seed, args.num_images, args.scheduler)


def cmd_draw(args) -> int:
    from studio.workspace import LOCAL_USER

    studio = _studio(args)
    models = [str(m) for m in args.model] or ["base"]
    seeds = args.seed or [0]
    if args.command == "compare":
        result = studio.compare(LOCAL_USER, models, args.prompt, _settings(args, args.prompt[0], seeds[0]), seeds)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result.grid.save(args.out)
        print(f"{args.out} ({len(result.images)} pictures in {result.seconds:.1f} s)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for p_index, prompt in enumerate(args.prompt):
        if args.command == "inpaint":
            from PIL import Image

            result = studio.inpaint(LOCAL_USER, models[0], Image.open(args.image), Image.open(args.mask),
                                    _settings(args, prompt, seeds[0]), args.strength)
        else:
            result = studio.generate(LOCAL_USER, models[0], _settings(args, prompt, seeds[0]))
        for image, seed in zip(result.images, result.seeds):
            path = args.out / f"{args.command}-p{p_index}-s{seed}.png"
            image.save(path)
            print(path)
    return 0


def cmd_presets(args) -> int:
    studio = _studio(args)
    for name, preset in studio.presets().items():
        print(f"{name}: {preset.description}")
        for key, value in preset.values.items():
            why = preset.why.get(key)
            print(f"    {key} = {value!r}" + (f"  # {why}" if why else ""))
    return 0


def cmd_curate(args) -> int:
    from studio.data.curate import curate_folder_rows

    rows = curate_folder_rows(args.folder, args.subject_type)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            mark = "ok " if row["accepted"] else "REJECTED"
            print(f"{mark} {row['name']}" + (f": {row['reason']}" if row.get("reason") else "")
                  + "".join(f"\n      warning: {w}" for w in row.get("warnings", [])))
    return 0 if any(r["accepted"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    from studio.logs import quiet_libraries

    args = _parser().parse_args(argv)
    quiet_libraries()
    handlers = {"train": cmd_train, "generate": cmd_draw, "compare": cmd_draw, "inpaint": cmd_draw,
                "presets": cmd_presets, "curate": cmd_curate, "score": cmd_score}
    try:
        return handlers[args.command](args)
    except (ValueError, KeyError, PermissionError, NotADirectoryError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The process entry point (`studio`, `python -m studio`): main(), then out without the interpreter's teardown.

    Everything the command made is on disk by then (each event and output file is closed when written); what is
    left is Python freeing torch's and the models' objects one by one, which took 1.7-1.9 s after a finished
    training run (benchmarks/whole_run.py, "process exit"): time a user waits for nothing."""
    import logging
    import os

    try:
        code = main()
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

