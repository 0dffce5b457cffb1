"""The CLI's view of a run: a tqdm bar with loss and ETA, or raw JSON lines (--json)."""
from __future__ import annotations

import json
import sys

from tqdm import tqdm


class ProgressPrinter:
    def __init__(self, json_lines: bool = False) -> None:
        self.json_lines = json_lines
        self.bar: tqdm | None = None
        self.class_bar: tqdm | None = None
        self.subject_losses: dict[str, float] = {}  # several subjects: each one's latest loss

    def __call__(self, event) -> None:
        if self.json_lines:
            print(json.dumps(event.to_dict()), flush=True)
            return
        kind = event.kind
        if kind == "class_images":
            if self.class_bar is None:
                self.class_bar = tqdm(total=event.total, initial=event.done, desc="class images", unit="img", file=sys.stderr)
            self.class_bar.n = event.done
            self.class_bar.refresh()
        elif kind == "started":
            self.bar = tqdm(total=event.max_steps, initial=event.resumed_from, desc="training", unit="step", file=sys.stderr)
        elif kind == "step" and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            self.subject_losses.update(event.subject_losses or {})  # with batch 1 the subjects take turns: keep each
            self.bar.set_postfix(loss=f"{event.loss:.4f}", prior=f"{event.prior_loss:.4f}",
                                 **{k: f"{v:.4f}" for k, v in self.subject_losses.items()})
        elif kind in ("notice", "failed", "phase", "checkpoint", "preview", "finished", "cancelled"):
            text = {
                "notice": lambda e: f"note: {e.message}",
                "failed": lambda e: f"failed: {e.error}" + (f" ({e.advice})" if e.advice else ""),
                "phase": lambda e: f"{e.name}: {e.detail}",
                "checkpoint": lambda e: f"checkpoint at step {e.step}: {e.path}",
                "preview": lambda e: f"previews at step {e.step}: {len(e.images)} images",
                "finished": lambda e: f"finished at step {e.step} in {e.seconds:.0f} s",
                "cancelled": lambda e: f"stopped at step {e.step}",
            }[kind](event)
            (self.bar.write if self.bar is not None else lambda s: print(s, file=sys.stderr))(text)

    def close(self) -> None:
        for bar in (self.class_bar, self.bar):
            if bar is not None:
                bar.close()
