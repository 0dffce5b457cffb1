"""Seconds from `python app.py --port N` to the first HTTP 200 on `/` (goal < 10 s), median of 3.

    python -m benchmarks.startup [--runs 3] [--timeout 120] [--base-model PATH]

Each launch gets a fresh STUDIO_HOME in a temp folder (a first start, no workspace yet) and its own
port; the server is stopped (its process group only) as soon as `/` answers.
"""
from __future__ import annotations

from benchmarks import common  # first: sets the environment the child inherits

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_once(base_model: str | None, timeout: float) -> tuple[float | None, str]:
    port = free_port()
    home = common.temp_root("startup-home")
    env = {**os.environ, "STUDIO_HOME": str(home)}
    cmd = [sys.executable, "app.py", "--port", str(port)] + (["--base-model", base_model] if base_model else [])
    log = open(home / "app.log", "w")
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.perf_counter() - tic < timeout:
            if proc.poll() is not None:
                return None, f"app.py exited with {proc.returncode}; see {home / 'app.log'}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - tic, ""
            except OSError:
                pass
            time.sleep(0.1)
        return None, f"no HTTP 200 within {timeout:.0f} s; see {home / 'app.log'}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # only the group this script started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--base-model", default=None)
    args = ap.parse_args()
    if not (common.REPO / "app.py").exists():
        print("app.py does not exist yet: nothing to measure.")
        return
    base, described = args.base_model, "assets/builtin-model"
    if base is None and not (common.BUILTIN / "model_index.json").exists():
        # app.py refuses to start without a base model; lend it a built-in-architecture one (random weights)
        base, described = common.base_model(None, common.temp_root("startup-model"))
    elif base:
        described = base
    times, errors = [], []
    for _ in range(args.runs):
        seconds, error = launch_once(base, args.timeout)
        (times.append(seconds) if seconds is not None else errors.append(error))
    common.header("Startup: `python app.py --port N` to the first HTTP 200 on /")
    print(f"- base model: {described}; fresh STUDIO_HOME per launch\n")
    rows = [(i + 1, t) for i, t in enumerate(times)] + [("failed", e) for e in errors]
    med = common.median(times)
    rows.append(("median (goal < 10 s)", f"{med:.2f} {'ok' if med < 10 else 'MISSED'}" if times else "n/a"))
    common.table(["launch", "seconds to first 200"], rows)


if __name__ == "__main__":
    main()
