"""What a browser watching a training run costs: chromium's CPU time (and the app's) with the Train tab open.

    python -m benchmarks.browser_cpu [--repo PATH] [--label NAME] [--seconds 60] [--idle-seconds 30] [--steps 2000]
                                     [--from-step 0] [--class-images 8] [--port N]

Starts `python app.py` from the checkout at --repo (default: this repository; an older export measures an older
app with this script) on a fresh STUDIO_HOME, opens it in Debian's chromium through Playwright, and measures two
windows: the page idle on the Train tab with no run, then the page on the Train tab while a run trains (the demo
subject on the built-in model, started the way a user does: "Try the demo subject", then Start, with --steps so
the run outlasts the window; --from-step starts that window later in the run, where the loss chart holds more
steps). For each window: CPU time (user + system, psutil) summed over chromium's process
tree, over the app's process tree, and over Playwright's driver, each as % of one core; the training steps done
(from the run's events.jsonl); what the page received (requests, bytes, server-sent messages, and for the Train
tab's poll which outputs carried an update rather than a skip); and chromium's own Performance counters
(script / layout / style time) to tell which work dominates. The load average is printed: other jobs share the
CPUs, so compare browser cost against the steps per second each run managed.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import base64
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PERF_METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "LayoutCount",
                "RecalcStyleCount")
TICKS = os.sysconf("SC_CLK_TCK")


# -- process trees and CPU time ---------------------------------------------------------------------------------
def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs) -> dict[int, float]:
    """pid -> user + system seconds. Keyed by pid so a process born inside the window counts from zero."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    # a process that died inside the window takes its time with it (chromium's renderers live as long as the page)
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def groups() -> dict[str, list[psutil.Process]]:
    """Our descendants split into chromium (every process of the browser) and Playwright's node driver."""
    found = {"browser": [], "driver": []}
    for p in tree(psutil.Process())[1:]:
        try:
            name = " ".join(p.cmdline()[:1]) + " " + p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "chrom" in name.lower():
            found["browser"].append(p)
        elif "node" in name.lower() or "playwright" in name.lower():
            found["driver"].append(p)
    return found


def kind(p: psutil.Process) -> str:
    """chromium's role for a process: browser (the main one), renderer, gpu-process (software compositing here),
    utility (network service, storage), zygote..."""
    try:
        found = next((a.split("=", 1)[1] for a in p.cmdline() if a.startswith("--type=")), "browser")
        sub = next((a.split("=", 1)[1].rsplit(".", 1)[-1] for a in p.cmdline() if a.startswith("--utility-sub-type=")), "")
        return f"{found}:{sub}" if sub else found
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def machine_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


# -- what the page receives (Chrome DevTools Protocol, outside the page's own JavaScript) ------------------------
class Wire:
    """Counts requests, bytes and server-sent messages; tallies which outputs of the poll carried an update.

    Gradio streams its queue's results over one long response (server-sent events). Network.streamResourceContent
    hands us that stream's chunks, so the messages can be read without touching the page."""

    def __init__(self, page, poll_outputs: list[str]):
        self.cdp = page.context.new_cdp_session(page)
        self.poll_outputs = poll_outputs
        self.buffers: dict[str, str] = {}
        self.streams: dict[str, bool] = {}  # queue stream request id -> its chunks arrive with the events
        self.streamed = self.read_whole = self.unread = 0
        self.reset()
        self.cdp.on("Network.requestWillBeSent", self._request)
        self.cdp.on("Network.responseReceived", self._response)
        self.cdp.on("Network.dataReceived", self._data)
        self.cdp.on("Network.loadingFinished", self._finished)
        self.cdp.send("Network.enable")
        self.cdp.send("Performance.enable")

    def reset(self) -> None:
        self.requests = self.joins = 0
        self.bytes = 0
        self.messages: collections.Counter = collections.Counter()
        self.polls = 0
        self.updated: collections.Counter = collections.Counter()  # output name -> polls that sent it
        self.update_bytes: collections.Counter = collections.Counter()

    def metrics(self) -> dict[str, float]:
        return {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}

    def _request(self, event) -> None:
        self.requests += 1
        self.joins += "queue/join" in event["request"]["url"]  # one per event the page fires (each timer tick)

    def _response(self, event) -> None:
        if "event-stream" in (event["response"].get("mimeType") or "") or "queue/data" in event["response"]["url"]:
            self.streams[event["requestId"]] = False
            try:
                first = self.cdp.send("Network.streamResourceContent", {"requestId": event["requestId"]})
                self.streams[event["requestId"]] = True
                self.streamed += 1
                self._text(event["requestId"], base64.b64decode(first.get("bufferedData", "")).decode("utf-8", "replace"))
            except Exception:  # the stream already ended (a short one, on a busy machine): read it whole at its end
                pass

    def _finished(self, event) -> None:
        if self.streams.pop(event["requestId"], True):
            return
        try:
            body = self.cdp.send("Network.getResponseBody", {"requestId": event["requestId"]})
            text = base64.b64decode(body["body"]).decode("utf-8", "replace") if body.get("base64Encoded") else body["body"]
            self.read_whole += 1
            self._text(event["requestId"], text + "\n\n")
        except Exception:
            self.unread += 1

    def _data(self, event) -> None:
        self.bytes += event.get("encodedDataLength") or event.get("dataLength") or 0
        if event.get("data"):
            self._text(event["requestId"], base64.b64decode(event["data"]).decode("utf-8", "replace"))

    def _text(self, request_id: str, text: str) -> None:
        buffer = self.buffers.get(request_id, "") + text
        *complete, rest = re.split(r"\r?\n\r?\n", buffer)
        self.buffers[request_id] = rest
        for block in complete:
            data = "".join(line[5:].strip() for line in block.splitlines() if line.startswith("data:"))
            try:
                message = json.loads(data) if data else None
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            self.messages[message.get("msg", "?")] += 1
            outputs = (message.get("output") or {}).get("data") if isinstance(message.get("output"), dict) else None
            if message.get("msg") == "process_completed" and isinstance(outputs, list) and len(outputs) == len(self.poll_outputs):
                self.polls += 1  # the only event firing while the page just watches is the Train tab's timer
                for name, value in zip(self.poll_outputs, outputs):
                    if not (isinstance(value, dict) and set(value) <= {"__type__"}):  # {"__type__": "update"} = skip
                        self.updated[name] += 1
                        self.update_bytes[name] += len(json.dumps(value))


def poll_outputs(url: str) -> list[str]:
    """The names of the train_poll handler's outputs (elem_id, else label, else type), from the app's config."""
    for path in ("config", "gradio_api/config"):
        try:
            with urllib.request.urlopen(f"{url}/{path}", timeout=30) as response:
                config = json.loads(response.read())
            break
        except Exception:
            config = None
    if not config:
        return []
    components = {c["id"]: c for c in config.get("components", [])}

    def name(cid: int) -> str:
        c = components.get(cid, {})
        props = c.get("props", {})
        if c.get("type") == "state":  # kept on the server: the page never gets a value for it
            return f"(state)#{cid}"
        return props.get("elem_id") or props.get("label") or f"{c.get('type', '?')}#{cid}"

    for dep in config.get("dependencies", []):
        if dep.get("api_name") == "train_poll":
            return [name(cid) for cid in dep.get("outputs", [])]
    return []


# -- the app ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(repo: Path, home: Path, port: int) -> dict:
    env = dict(os.environ)
    # the checkout's own `studio` first: the venv holds this repository as an editable install
    env.update(PYTHONPATH=str(repo), STUDIO_HOME=str(home), GRADIO_SERVER_PORT=str(port), PORT=str(port),
               HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("STUDIO_BASE_MODEL", None)  # the built-in model, as a new user gets it
    return env


def studio_package(python: str, repo: Path, env: dict) -> str:
    out = subprocess.run([python, "-c", "import studio; print(studio.__file__)"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or out.stderr.strip()[-300:]


def start_app(python: str, repo: Path, env: dict, port: int, log: Path) -> subprocess.Popen:
    # --port too: an older app.py reads only its own flag / $PORT, not Gradio's variable
    with open(log, "wb") as fh:
        app = subprocess.Popen([python, "app.py", "--port", str(port), "--home", env["STUDIO_HOME"]], cwd=repo,
                               env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited ({app.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return app
        except Exception:
            time.sleep(1.0)
    raise RuntimeError(f"the app did not answer on port {port} in 300 s:\n{log.read_text()[-2000:]}")


def stop_app(app: subprocess.Popen | None) -> None:
    if app is None or app.poll() is not None:
        return
    try:
        os.killpg(app.pid, signal.SIGTERM)  # its own session: the app and anything it started, nothing else
        app.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(app.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def steps_done(home: Path) -> int:
    """The newest step in the run's event log (there is one run: the home is fresh)."""
    best = 0
    for log in home.rglob("events.jsonl"):
        for line in log.read_text(errors="replace").splitlines():
            if '"step"' in line:
                try:
                    event = json.loads(line)
                except ValueError:  # a line being written
                    continue
                if event.get("kind") == "step":
                    best = max(best, int(event.get("step", 0)))
    return best


# -- one window ---------------------------------------------------------------------------------------------------
def measure(page, wire: Wire | None, app: subprocess.Popen, home: Path, seconds: float) -> dict:
    app_proc = psutil.Process(app.pid)
    procs = groups()
    metrics0 = wire.metrics() if wire else {}
    if wire:
        wire.reset()
    kinds = {p.pid: kind(p) for p in procs["browser"]}
    b0, a0, d0 = (cpu_seconds(procs["browser"]), cpu_seconds(tree(app_proc)), cpu_seconds(procs["driver"]))
    m0, s0, t0 = machine_busy(), steps_done(home), time.monotonic()
    page.wait_for_timeout(seconds * 1000)  # not time.sleep: Playwright must keep dispatching the CDP events
    elapsed = time.monotonic() - t0
    procs = groups()  # a renderer started inside the window counts too
    b1, a1, d1 = (cpu_seconds(procs["browser"]), cpu_seconds(tree(app_proc)), cpu_seconds(procs["driver"]))
    m1, s1 = machine_busy(), steps_done(home)
    by_kind: collections.Counter = collections.Counter()
    for p in procs["browser"]:
        if p.pid in b1:
            by_kind[kinds.get(p.pid) or kind(p)] += (b1[p.pid] - b0.get(p.pid, 0.0)) / elapsed
    metrics1 = wire.metrics() if wire else {}
    return {"seconds": elapsed, "browser": spent(b0, b1) / elapsed, "app": spent(a0, a1) / elapsed,
            "driver": spent(d0, d1) / elapsed, "machine": (m1 - m0) / elapsed, "load": os.getloadavg()[0],
            "steps": s1 - s0, "browser_procs": len(procs["browser"]), "by_kind": dict(by_kind),
            "perf": {k: metrics1.get(k, 0.0) - metrics0.get(k, 0.0) for k in PERF_METRICS},
            "requests": wire.requests if wire else None, "ticks": wire.joins if wire else None, "bytes": wire.bytes if wire else None,
            "messages": dict(wire.messages) if wire else {}, "polls": wire.polls if wire else None,
            "updated": dict(wire.updated) if wire else {}, "update_bytes": dict(wire.update_bytes) if wire else {}}


def progress(page) -> str:
    field = page.locator("#train-progress textarea, #train-progress input").first
    return field.input_value() if field.count() else ""


def start_demo_run(page, steps: int, class_images: int) -> None:
    """The demo subject, then Start, through the page: what a user clicks (the elem_ids and labels of the UI,
    which both the current and the earlier app have)."""
    page.get_by_role("tab", name="1 · Curate").click()
    page.locator("#demo-btn").click()
    page.get_by_text("5 of 5 photos accepted").wait_for(timeout=120_000)
    page.get_by_role("tab", name="2 · Train").click()
    page.wait_for_timeout(2000)  # the demo's preset refill lands before our edits, not after them
    page.get_by_text("Advanced").first.click()
    for label, value in (("Steps (0 = auto from photos)", steps), ("Class images", class_images)):
        field = page.get_by_role("spinbutton", name=label, exact=True)
        field.fill(str(value))
        field.press("Tab")
    # fewer denoising steps per class image: setup only, it ends before the window and leaves a step's work alone
    extra = page.get_by_label("Extra settings (TOML `key = value` lines)")
    kept = extra.input_value().strip()
    extra.fill((kept + "\n" if kept else "") + "class_image_steps = 4")
    extra.press("Tab")
    deadline = time.time() + 60
    while str(steps) not in page.locator("#resolved-config").inner_text():
        if time.time() > deadline:
            raise RuntimeError("the settings table never showed the steps: " + page.locator("#resolved-config").inner_text()[:500])
        page.wait_for_timeout(300)
    page.locator("#train-start").click()
    deadline = time.time() + 600  # the class images are drawn first
    while time.time() < deadline:
        found = re.search(r"step (\d+)/(\d+)", progress(page))
        if found and int(found.group(1)) >= 1:
            if int(found.group(2)) != steps:
                raise RuntimeError(f"the run has {found.group(2)} steps, not {steps}: {progress(page)!r}")
            return
        page.wait_for_timeout(500)
    raise RuntimeError(f"training never started: progress {progress(page)!r}, status "
                       f"{page.locator('#train-status').inner_text()[:300]!r}")


def run(args) -> tuple[dict, list[dict], dict]:
    from playwright.sync_api import sync_playwright

    repo = Path(args.repo).resolve()
    port = args.port or free_port()
    home = Path(tempfile.mkdtemp(prefix="bench-browser-home-"))
    env = app_env(repo, home, port)
    info = {"repo": str(repo), "commit": args.label or subprocess.run(
                ["git", "-C", str(repo), "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
            or "(no git: name it with --label)",
            "studio": studio_package(args.python, repo, env)}
    url, app, rows, log = f"http://127.0.0.1:{port}", None, [], home.parent / f"{home.name}.log"
    try:
        app = start_app(args.python, repo, env, port, log)
        outputs = poll_outputs(url)
        info["poll_outputs"] = outputs
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                wire = Wire(page, outputs) if outputs else None
                page.goto(url)
                page.locator("#demo-btn").wait_for(timeout=120_000)
                page.get_by_role("tab", name="2 · Train").click()
                page.locator("#train-start").wait_for(timeout=60_000)
                if args.idle_seconds > 0:
                    page.wait_for_timeout(5000)  # the page's load-time calls settle
                    rows.append({"window": "idle: Train tab, no run", **measure(page, wire, app, home, args.idle_seconds)})
                start_demo_run(page, args.steps, args.class_images)
                page.wait_for_timeout(3000)  # past the first step's one-off redraws
                # the loss chart's data grows with every step: a window later in the run sees a bigger chart
                deadline = time.time() + 1800
                while steps_done(home) < args.from_step:
                    if time.time() > deadline or app.poll() is not None:
                        raise RuntimeError(f"the run never reached step {args.from_step}: {progress(page)!r}")
                    page.wait_for_timeout(1000)
                info["window_from"] = steps_done(home)
                rows.append({"window": "training: Train tab watching", **measure(page, wire, app, home, args.seconds)})
                info["progress"] = progress(page)
                info["streamed"] = (wire.streamed, wire.read_whole, wire.unread) if wire else (0, 0, 0)
            finally:
                browser.close()
    finally:
        stop_app(app)
        for leftover in groups()["browser"]:  # a chromium that outlived browser.close() (only ours: our descendants)
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(home, ignore_errors=True)
        log.unlink(missing_ok=True)  # an error above already carries its tail
    return info, rows, {"port": port}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=str(common.REPO), help="the checkout whose app.py to run (default: this one)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter for the app (default: this one)")
    ap.add_argument("--seconds", type=float, default=60, help="the window measured while training")
    ap.add_argument("--idle-seconds", type=float, default=30, help="the window with no run (0 = skip)")
    ap.add_argument("--steps", type=int, default=2000, help="the run's steps: enough to outlast the window")
    ap.add_argument("--class-images", type=int, default=8, help="drawn before training starts (setup time only)")
    ap.add_argument("--from-step", type=int, default=0, help="start the training window once the run is this far")
    ap.add_argument("--label", default="", help="the version's name (default: the checkout's `git log -1` hash)")
    ap.add_argument("--port", type=int, default=0, help="default: a free one")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is absent (apt-get install chromium); this benchmark never downloads a browser")

    info, rows, _ = run(args)
    common.header("What a browser watching the Train tab costs (chromium via Playwright, app as `python app.py`)")
    print(f"- app: `{info['repo']}` at {info['commit']}, its `studio` package: `{info['studio']}`")
    print(f"- run: the demo subject on the built-in model, {args.steps} steps ({args.class_images} class images drawn "
          f"before the window); training window from step {info.get('window_from', '?')}, progress at its end: `{info.get('progress', '')}`")
    print(f"- CPU: user + system over each process tree, % of one core; machine = every process on the box "
          f"({os.cpu_count()} cores = {100 * os.cpu_count()} %)\n")
    version = f"{info['repo']} @ {info['commit']}"
    common.table(["version", "window", "s", "browser % core", "app % core", "playwright driver % core",
                  "machine % (all)", "load avg 1 min", "steps", "steps/s"],
                 [(version, r["window"], round(r["seconds"], 1), round(100 * r["browser"], 1), round(100 * r["app"], 1),
                   round(100 * r["driver"], 1), round(100 * r["machine"], 1), round(r["load"], 2), r["steps"],
                   round(r["steps"] / r["seconds"], 2)) for r in rows])
    for r in rows:  # where in chromium the time goes
        print(f"- browser by process, {r['window']}: " + ", ".join(
            f"{k} {100 * v:.1f} %" for k, v in sorted(r["by_kind"].items(), key=lambda kv: -kv[1])))
    print()
    common.table(["window", "events fired (queue/join)", "requests", "kB received", "SSE messages", "poll replies", "script ms/s", "layout ms/s",
                  "style ms/s", "layouts/s", "style recalcs/s"],
                 [(r["window"], r["ticks"], r["requests"], None if r["bytes"] is None else round(r["bytes"] / 1024, 1),
                   ", ".join(f"{k} {v}" for k, v in sorted(r["messages"].items())) or "-", r["polls"],
                   round(1000 * r["perf"]["ScriptDuration"] / r["seconds"], 1),
                   round(1000 * r["perf"]["LayoutDuration"] / r["seconds"], 1),
                   round(1000 * r["perf"]["RecalcStyleDuration"] / r["seconds"], 1),
                   round(r["perf"]["LayoutCount"] / r["seconds"], 2),
                   round(r["perf"]["RecalcStyleCount"] / r["seconds"], 2)) for r in rows])
    names = info.get("poll_outputs") or []
    if names and any(r["polls"] for r in rows):
        # which of the poll's outputs the server actually sent (anything but a skip), per window
        common.table(["poll output", *(f"{r['window']}: replies with it / kB" for r in rows)],
                     [(n, *(f"{r['updated'].get(n, 0)} / {r['update_bytes'].get(n, 0) / 1024:.1f}" for r in rows))
                      for n in dict.fromkeys(names) if not n.startswith("(state)")])
    streamed, whole, unread = info.get("streamed", (0, 0, 0))
    print(f"- queue streams read over the session: {streamed} as they came, {whole} whole at their end, {unread} unreadable "
          f"(poll replies counted only from the streams read)\n")


if __name__ == "__main__":
    main()
