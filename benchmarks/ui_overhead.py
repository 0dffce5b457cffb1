"""What the web UI costs a training run: headless `train_folder` vs a run started through the app.

    python -m benchmarks.ui_overhead [--steps 30] [--rounds 2] [--base-model PATH]

The app side launches the real Gradio app (`serve(studio)`, on a local port, its queue live)
and starts the run the way the Start button does (`studio.start_training`, the job-queue thread). A
client thread then calls the app's own `train_poll` handler every second (the page's gr.Timer ticks every
2 s, tab_train.POLL_EVERY_S: this is the harsher case): events since the cursor, run state, status/progress
markdown, the loss plot and preview files.
It calls the handler in-process rather than over HTTP/websocket (no scripted browser here), so the
server's JSON serialisation of the reply is not included. If the app cannot be imported, the client
polls the facade (`events` + `run_state`) instead, and the output says so.
Headless and app runs alternate, so machine noise hits both alike.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import threading
import time
from pathlib import Path


def run_seconds(events) -> tuple[float, float]:
    """(first event -> finished, median step.seconds) from a run's events."""
    steps = [e.seconds for e in events if e.kind == "step"]
    end = next(e.time for e in events if e.kind in ("finished", "failed", "cancelled"))
    return end - events[0].time, common.median(steps)


def headless(studio, photos: Path, out: Path, overrides: dict) -> tuple[float, float]:
    from studio.events import read_events

    studio.train_folder(photos, out, ["object-lora"], overrides)
    return run_seconds(read_events(out / "events.jsonl"))


def find_poll(demo):
    """The app's own timer handler (api_name train_poll), or None."""
    fns = getattr(demo, "fns", {})
    for fn in (fns.values() if isinstance(fns, dict) else fns):
        if getattr(fn, "api_name", None) == "train_poll":
            return fn.fn
    return None


def through_app(studio, dataset_id: str, overrides: dict, poll) -> tuple[float, float, int]:
    run_id = studio.start_training("local", dataset_id, ["object-lora"], overrides)
    polls = {"n": 0}
    done = threading.Event()

    def client():  # 1 Hz: twice the page's own rate
        current = {"run_id": run_id, "cursor": 0}
        while not done.is_set():
            if poll is not None:
                out = poll(None, current, None)
                current = out[0] if isinstance(out[0], dict) else current
            else:
                _, cursor = studio.events("local", run_id, current["cursor"])
                studio.run_state("local", run_id)
                current = {"run_id": run_id, "cursor": cursor}
            polls["n"] += 1
            done.wait(1.0)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    while studio.run_state("local", run_id).status not in ("finished", "failed", "cancelled"):
        time.sleep(0.5)
    done.set()
    thread.join()
    events, _ = studio.events("local", run_id, 0)
    total, step = run_seconds(events)
    return total, step, polls["n"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2, help="headless / app pairs, alternated")
    ap.add_argument("--port", type=int, default=7991)
    ap.add_argument("--base-model", default=None)
    args = ap.parse_args()
    tmp = common.temp_root("ui")
    model, described = common.base_model(args.base_model, tmp)
    photos = common.photos_dir()

    from studio.engine import Studio

    studio = Studio(tmp / "home", base_model=model)
    overrides = common.fast_overrides(max_steps=args.steps)
    dataset_id = studio.photos.add("local", sorted(photos.glob("*.png")))
    mode, demo = "the app's train_poll handler, 1 Hz, app served on a local port", None
    try:
        from studio.ui.app import serve

        demo = serve(studio, server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=True, quiet=True)
        poll = find_poll(demo)
        if poll is None:
            mode = "facade polling (events + run_state) at 1 Hz: the app has no train_poll handler"
    except Exception as exc:  # the app is being written concurrently: fall back, and say so
        poll, mode = None, f"facade polling (events + run_state) at 1 Hz: the app is not importable ({exc!r:.120})"

    studio.train_folder(photos, tmp / "warm", ["object-lora"], overrides)  # draws the class images once for all runs
    rows, ratios = [], []
    for r in range(args.rounds):
        h_total, h_step = headless(studio, photos, tmp / f"headless{r}", overrides)
        a_total, a_step, polls = through_app(studio, dataset_id, overrides, poll)
        rows += [(f"{r + 1}", "headless train_folder", h_total, h_step, "-"),
                 (f"{r + 1}", "through the app + 1 Hz client", a_total, a_step, polls)]
        ratios.append((a_total / h_total, a_step / h_step))
    if demo is not None:
        demo.close()

    common.header("UI overhead: headless run vs run started through the app with a 1 Hz poller")
    print(f"- base model: {described}; LoRA, {args.steps} steps, previews every ~{max(1, args.steps // 4)} steps "
          f"(4 denoising steps), class images cached before timing\n- client: {mode}\n")
    common.table(["round", "how", "run seconds (first event -> finished)", "median s/step", "polls"], rows)
    total_ratio = common.median([r[0] for r in ratios])
    step_ratio = common.median([r[1] for r in ratios])
    common.table(["ratio app / headless (median over rounds)", "value"],
                 [("whole run (goal <= 1.05)", f"{total_ratio:.3f} {'ok' if total_ratio <= 1.05 else 'MISSED'}"),
                  ("median step", f"{step_ratio:.3f}")])


if __name__ == "__main__":
    main()
