"""Pure functions that turn engine answers into what the UI shows.

No gradio here: every function takes plain data (events, reports, configs) and
returns plain data (DataFrames, lists, markdown), so it is testable alone.
"""
from __future__ import annotations

import re
import tomllib
from datetime import datetime
from typing import Any, Iterable, Sequence

import pandas as pd

from studio.config import AUTO_FIELDS, DERIVED
from studio.events import Failed, Finished, Score
from studio.runs import RunStatus
from studio.workspace import ID_PATTERN as USER_ID

LOSS_SERIES = (("total", "loss"), ("instance", "instance_loss"), ("prior", "prior_loss"))


# -- training events ------------------------------------------------------------------
def _kind(events: Iterable[Any], kind: str) -> list[Any]:
    return [e for e in events if e.kind == kind]


def smooth(values: Sequence[float], weight: float = 0.6) -> list[float]:
    """Exponential moving average (TensorBoard style, debiased), so early points are not pulled to zero."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * float(v)
        out.append(avg / (1 - weight**i) if weight else avg)
    return out


def loss_frame(events: Iterable[Any], weight: float = 0.6) -> pd.DataFrame:
    """Long-format DataFrame (step, loss, series) of smoothed total/instance/prior loss; prior only when used."""
    steps = _kind(events, "step")
    rows: list[dict[str, Any]] = []
    has_prior = any(s.prior_loss for s in steps)
    for series, attr in LOSS_SERIES:
        if series == "prior" and not has_prior:
            continue
        for s, value in zip(steps, smooth([getattr(s, attr) for s in steps], weight)):
            rows.append({"step": int(s.step), "loss": round(value, 6), "series": series})
    # several subjects: each one's instance loss, over the steps that showed it (with batch 1 they take turns)
    for subject in dict.fromkeys(k for s in steps for k in getattr(s, "subject_losses", {}) or {}):
        shown = [s for s in steps if subject in s.subject_losses]
        for s, value in zip(shown, smooth([s.subject_losses[subject] for s in shown], weight)):
            rows.append({"step": int(s.step), "loss": round(value, 6), "series": f"subject {subject}"})
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "str"})  # typed even when empty: the plot's axes


SCORE_SERIES = (("subject fidelity ↑", "subject_fidelity"), ("prompt fidelity ↑", "prompt_fidelity"), ("drift ↓", "drift"))
PICK_SERIES = "★ output"  # a vertical line at the checkpoint that is (or, while training, would be) the run's output
# Each measure's colour, and a paler one for the base model's value drawn across the chart as its reference line.
SCORE_COLOURS = {"subject fidelity ↑": "#2563eb", "prompt fidelity ↑": "#16a34a", "drift ↓": "#dc2626",
                 **{f"base: {name}": pale for name, pale in (("subject fidelity ↑", "#93c5fd"),
                                                            ("prompt fidelity ↑", "#86efac"), ("drift ↓", "#fca5a5"))},
                 PICK_SERIES: "#111827"}


def score_frame(events: Iterable[Any]) -> pd.DataFrame:
    """Long-format DataFrame (step, score, series) of each checkpoint's newest scores (step 0 is the base model), the
    base model's values as flat reference lines, and a vertical line at the checkpoint kept as the output (the
    best so far while training)."""
    from studio.evaluation.pick import pick_checkpoint
    from studio.evaluation.scorecard import BASE, Scorecard, output_step

    events = list(events)
    latest: dict[str, Any] = {}
    for event in _kind(events, Score.kind):
        latest[event.checkpoint] = event
    measured = lambda e, attr: getattr(e, attr) == getattr(e, attr)  # NaN (not measured) is left out
    rows = [{"step": int(e.step), "score": round(float(getattr(e, attr)), 4), "series": series}
            for e in sorted(latest.values(), key=lambda e: e.step) for series, attr in SCORE_SERIES if measured(e, attr)]
    last = max((int(e.step) for e in latest.values()), default=0)
    base = latest.get(BASE)
    if base is not None:
        rows += [{"step": step, "score": round(float(getattr(base, attr)), 4), "series": f"base: {series}"}
                 for series, attr in SCORE_SERIES if measured(base, attr) for step in sorted({0, last})]
    kept = output_step(events)
    card = Scorecard.from_events(events) if kept is None else None
    if card is not None and card.rows:
        kept = pick_checkpoint(card.rows, card.base).step
    # Every series is in every frame, from the first (the base model's scores alone): the page's chart keeps the
    # series it was first given, and one that appears later is never drawn. Before any checkpoint the marker
    # stands on the y axis.
    if latest:
        rows += [{"step": kept or 0, "score": value, "series": PICK_SERIES} for value in (0.0, 1.0)]
    frame = pd.DataFrame(rows, columns=["step", "score", "series"])
    return frame.astype({"step": "int64", "score": "float64", "series": "str"})


def scorecard_markdown(events: Iterable[Any]) -> str:
    """The run's scorecard (each checkpoint's newest scores, the base model first) and what the studio kept."""
    from studio.evaluation.scorecard import KEPT, SWITCHED, Scorecard

    events = list(events)
    scorecard = Scorecard.from_events(events)
    if scorecard is None:
        return ""
    card = scorecard.markdown()
    said = [e.message for e in _kind(events, "notice") if e.message.startswith((KEPT, SWITCHED))]
    return card + (f"\n**{said[-1].removeprefix('scorecard: ')}**\n" if said else "")  # the newest: pick or choice


def checkpoint_choices(events: Iterable[Any], steps: Sequence[int]) -> list[tuple[str, str]]:
    """What "Use as the output" offers: the last step, then each kept checkpoint with its subject fidelity."""
    scores = {e.step: e.subject_fidelity for e in _kind(events, Score.kind)}

    def label(step: int) -> str:
        score = scores.get(step)
        return f"step {step}" + (f" · subject {score:.0%}" if score is not None and score == score else "")  # NaN: none

    return [("the last step", "last"), *((label(s), str(s)) for s in sorted(steps, reverse=True))]


def output_choice(events: Iterable[Any], choices: Sequence[tuple[str, str]]) -> str | None:
    """Which of `checkpoint_choices` is the run's output now: its checkpoint, else the last step."""
    from studio.evaluation.scorecard import output_step

    step = output_step(events)
    values = [value for _, value in choices]
    return str(step) if step is not None and str(step) in values else ("last" if "last" in values else None)


def preview_items(events: Iterable[Any], limit: int = 24) -> list[tuple[str, str]]:
    """[(run-relative image path, "step N · prompt")], newest preview first."""
    items: list[tuple[str, str]] = []
    for preview in reversed(_kind(events, "preview")):
        for i, path in enumerate(preview.images):
            prompt = preview.prompts[i] if i < len(preview.prompts) else ""
            seed = f" · seed {preview.seeds[i]}" if i < len(preview.seeds) else ""
            items.append((path, f"step {preview.step} · {prompt}{seed}"))
    return items[:limit]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(events: Iterable[Any], window: int = 10) -> str:
    """ "step 12/40 · 1.3 it/s · 0:20 left" from the latest step events ("" before the first step)."""
    events = list(events)
    steps = _kind(events, "step")
    if not steps:
        started = _kind(events, "started")
        return f"step 0/{started[-1].max_steps} · starting" if started else ""
    last = steps[-1]
    recent = [s.seconds for s in steps[-window:] if s.seconds > 0]
    if not recent:
        return f"step {last.step}/{last.max_steps}"
    rate = len(recent) / sum(recent)
    speed = f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it"
    left = format_duration(max(0, last.max_steps - last.step) / rate)
    return f"step {last.step}/{last.max_steps} · {speed} · {left} left"


def class_images_text(events: Iterable[Any]) -> str:
    progress = _kind(events, "class_images")
    if not progress:
        return ""
    last = progress[-1]
    reused = f" ({last.reused} reused from cache)" if last.reused else ""
    state = "done" if last.total and last.done >= last.total else "drawing"
    return f"class images {last.done}/{last.total} · {state}{reused}"


def status_markdown(state: Any | None, events: Iterable[Any], name: str = "") -> str:
    """Run status, queue position, latest phase, notices, what Stop kept and (on failure) the error with advice."""
    if state is None:
        return "No run yet. Curate photos, then press **Start**."
    events = list(events)
    lines = [f"**{name or 'Run'}** (`{state.run_id}`): **{state.status}**"]
    if state.status == RunStatus.QUEUED and state.queue_position > 0:
        place = state.queue_position
        lines[0] += " · next in line" if place == 1 else f" · {place - 1} run(s) waiting ahead of yours"
        wait = getattr(state, "queue_wait", None)
        lines[0] += f", starts in about {format_duration(wait)}" if wait is not None else ", waiting for a free device"
    phases = _kind(events, "phase")
    if phases and state.status in (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.QUEUED):
        lines.append(f"phase: {phases[-1].name}" + (f" ({phases[-1].detail})" if phases[-1].detail else ""))
    for notice in _kind(events, "notice")[-3:]:
        lines.append(f"ℹ️ {notice.message}")
    failed = _kind(events, Failed.kind)
    if state.status == RunStatus.FAILED and failed:
        lines.append(f"❌ **{failed[-1].error}**")
        if failed[-1].advice:
            lines.append(f"💡 {failed[-1].advice}")
    finished = _kind(events, Finished.kind)
    if state.status == RunStatus.FINISHED and finished:
        lines.append(f"✓ finished in {format_duration(finished[-1].seconds)}; try it in the **Generate** tab")
    if state.status in (RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.FAILED):
        lines.append(resume_note(state))
    return "\n\n".join(line for line in lines if line)


def resume_note(state: Any) -> str:
    """What a stopped run kept, and what Resume will do with it."""
    where = f"stopped at step {state.step} of {state.max_steps}"
    checkpoint = getattr(state, "checkpoint", "")
    if not checkpoint:
        return f"{where}; no checkpoint was saved, so **Resume** starts it again from step 0"
    return f"{where}; checkpoint `{checkpoint}` kept. **Resume** continues from it to step {state.max_steps}"


def controls(state: Any | None) -> dict[str, bool]:
    """Which run buttons can act now (the others are greyed out)."""
    status = getattr(state, "status", None)
    live = status in (RunStatus.RUNNING, RunStatus.QUEUED)
    return {"pause": status == RunStatus.RUNNING, "stop": live or status == RunStatus.PAUSED,
            "sample": status == RunStatus.RUNNING,
            "resume": status == RunStatus.PAUSED or bool(state is not None and getattr(state, "resumable", False)),
            "use": status == RunStatus.FINISHED}


# -- curation -------------------------------------------------------------------------
def verdict_caption(verdict: Any, manual_crop: bool = False) -> str:
    """The gallery's short label, status first (a long caption is cut off at its end): "✓ ok", "⚠ 2 warnings: blurry,
    duplicate" or "✗ rejected: <reason, cut short>", then the name. The full texts are in curation_markdown."""
    from studio.data.curate import warning_tag  # the short word for each of curate's warnings

    def clip(text: str, limit: int) -> str:  # at a word break when there is one in the second half
        if len(text) <= limit:
            return text
        cut = text[:limit - 1]
        if " " in cut[limit // 2:]:
            cut = cut[:cut.rindex(" ")]
        return cut.rstrip(" ,;:") + "…"

    if not verdict.accepted:
        status = "✗ rejected: " + clip(re.sub(r"^is ", "", verdict.reason or "not usable"), 32)
    elif verdict.warnings:
        n = len(verdict.warnings)
        tags = dict.fromkeys(warning_tag(w) for w in verdict.warnings)  # in order, each once
        status = f"⚠ {n} warning{'s' if n > 1 else ''}: {', '.join(tags)}"
    else:
        status = "✓ ok"
    text = f"{status} · {verdict.name}"
    if manual_crop:
        text += " · ✂ your crop"
    caption = getattr(verdict, "caption", None)
    if caption:
        text += f" · “{clip(caption, 40)}”"
    return text


def photo_edits(report: Any, crops: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the "Edit a photo" group needs per accepted photo: the crop used for training (the manual one when
    set), whether it is manual, and the caption."""
    out = {}
    for verdict in report.verdicts:
        if not verdict.accepted:
            continue
        manual = crops.get(verdict.name)
        box = [round(v) for v in manual] if manual else (verdict.crop_box.to_list() if verdict.crop_box else None)
        out[verdict.name] = {"box": box, "manual": manual is not None, "caption": verdict.caption or ""}
    return out


def edit_choice(edits: dict[str, Any] | None, current: str | None) -> tuple[list[str], str | None]:
    """The photo picker's choices and value: keep the current photo while it is still there."""
    names = list(edits or {})
    return names, (current if current in names else (names[0] if names else None))


def crop_fields(edit: dict[str, Any] | None) -> list[int | None]:
    """(left, top, right, bottom) for the four number inputs; blanks when the photo has no crop."""
    box = (edit or {}).get("box")
    return list(box) if box else [None, None, None, None]


def crop_note(name: str, edit: dict[str, Any] | None) -> str:
    if not edit:
        return ""
    box = edit.get("box")
    where = f"{box[2] - box[0]}×{box[3] - box[1]} px at ({box[0]}, {box[1]})" if box else "none"
    return f"`{name}` · {'your crop' if edit.get('manual') else 'automatic crop'}: {where}"


def curation_markdown(report: Any) -> str:
    """Shown above the gallery: the count and its advice, then every rejected photo with its reason and advice, every
    photo with warnings with all of them in full, and the warnings about the set."""
    def code(name: str) -> str:  # a file name as code; a backquote in it would end the code early
        return "`" + name.replace("`", "'") + "`"

    accepted = sum(1 for v in report.verdicts if v.accepted)
    lines = [f"**{accepted} of {len(report.verdicts)} photos accepted.** {report.count_advice}"]
    rejected = [v for v in report.verdicts if not v.accepted]
    if rejected:
        lines += ["", f"**✗ Rejected ({len(rejected)})**"]
        lines += [f"- {code(v.name)}: {v.reason}" + (f" — {v.advice}" if v.advice else "") for v in rejected]
    warned = [v for v in report.verdicts if v.accepted and v.warnings]
    if warned:
        lines += ["", f"**⚠ Warnings ({len(warned)} photo{'s' if len(warned) > 1 else ''})**"]
        for verdict in warned:
            if len(verdict.warnings) == 1:
                lines.append(f"- {code(verdict.name)}: {verdict.warnings[0]}")
            else:
                lines.append(f"- {code(verdict.name)}:")
                lines += [f"    - {warning}" for warning in verdict.warnings]
    if report.warnings:
        lines += ["", "**⚠ About the set**"]
        lines += [f"- {warning}" for warning in report.warnings]
    if not rejected and not warned and not report.warnings:
        lines += ["", "✓ No warnings."]
    return "\n".join(lines)


def subjects_markdown(listed: Sequence[dict[str, Any]]) -> str:
    """The other subjects the next run will teach beside the Curate tab's, one row each."""
    if not listed:
        return "Only the Curate tab's subject. Add another to teach several in one run (each keeps its own class)."
    rows = [f"| `{s['identifier']}` | {s['class_noun']} | {s['photos']} |" for s in listed]
    return "\n".join(["The next run also teaches:", "", "| identifier | class | photos |", "|---|---|---|", *rows])


# -- configuration --------------------------------------------------------------------
def method_of(method: str) -> str:
    """The Method radio's label as the config's word."""
    label = str(method).lower()
    for start, word in (("full", "full"), ("textual", "textual_inversion"), ("pivotal", "pivotal")):
        if label.startswith(start):
            return word
    return "lora"


def preset_for_method(current: str, method: str, available: Iterable[str]) -> str | None:
    """Switching the method keeps the preset's family: demo-full <-> demo-lora, face-full <-> face-lora.
    None when the family has no preset for that method."""
    family = current.rsplit("-", 1)[0] if current and "-" in current else ""
    name = f"{family}-{method_of(method)}"
    return name if family and name in set(available) else None


def preset_name(subject_type: str, method: str, available: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """The preset for a subject type and method ("lora"/"full"), plus any override the preset lacks."""
    method = method_of(method)
    available = set(available)
    name = f"{subject_type}-{method}"
    if name in available:
        return name, {}
    return f"{subject_type}-lora", ({"method": method} if method != "lora" else {})


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "(auto)"
    return str(value)


def config_table(config: dict[str, Any], sources: dict[str, str] | None, names: Sequence[str] | None = None,
                 native_resolution: int | None = None) -> str:
    """Markdown table: setting | value | why (preset reason, "set by you", derived, or default); no why without sources.
    A resolution of 0 is shown as the base model's, which is what the run will use."""
    names = list(names) if names is not None else list(config)
    rows = ["| setting | value | why |", "|---|---|---|"] if sources is not None else ["| setting | value |", "|---|---|"]
    for name in names:
        value = format_value(config.get(name))
        if name == "resolution" and not config.get(name) and native_resolution:
            value = f"{native_resolution} (the base model's)"
        row = f"| `{name}` | {value.replace('|', '/')} |"
        if sources is not None:
            row += f" {sources.get(name, 'default').replace('|', '/')} |"
        rows.append(row)
    return "\n".join(rows)


def advanced_values(config: dict[str, Any], sources: dict[str, str], names: Sequence[str]) -> dict[str, Any]:
    """Values to fill the Advanced controls (`names`) with; derived fields show 0 (= auto)."""
    return {name: 0 if name in AUTO_FIELDS and sources.get(name, "").startswith(DERIVED) else config.get(name)
            for name in names}


def changed_overrides(values: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Only the Advanced values that differ from what the presets give, so the 'why' stays the preset's."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(base.get(name), int) and not isinstance(base.get(name), bool) and isinstance(value, float):
            value = int(value) if value.is_integer() else value
        if name in AUTO_FIELDS and value == 0:
            continue
        if value != base.get(name):
            out[name] = value
    return out


def parse_extra_settings(text: str) -> dict[str, Any]:
    """Extra `key = value` lines in TOML syntax (e.g. `preview_seeds = [0, 1]`); raises ValueError when malformed."""
    if not text or not text.strip():
        return {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"extra settings are not valid `key = value` lines: {exc}") from exc
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(f"extra settings take plain `key = value` lines, not tables: {', '.join(nested)}")
    return data


def identifier_markdown(report: Any) -> str:
    parts = [f"tokens: {' · '.join(f'`{t}`' for t in report.tokens)}"]
    parts += [f"❌ {e}" for e in report.errors]
    parts += [f"⚠ {w}" for w in report.warnings]
    if report.suggestions:
        parts.append("suggestions: " + ", ".join(f"`{s}`" for s in report.suggestions))
    if not report.errors and not report.warnings:
        parts.append("✓ looks good")
    return "\n\n".join(parts)


# -- drawing and runs -----------------------------------------------------------------
def parse_lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def parse_seeds(text: str, default: int = 0) -> list[int]:
    """ "0, 1 2" -> [0, 1, 2]; raises ValueError naming the bad part."""
    parts = [p for p in re.split(r"[,\s]+", str(text or "").strip()) if p]
    if not parts:
        return [default]
    try:
        return [int(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"seeds must be whole numbers separated by commas, got {text!r}") from exc


def runs_frame(runs: Sequence[Any]) -> pd.DataFrame:
    rows = [{"name": r.name or r.run_id, "status": str(r.status), "steps": f"{r.step}/{r.max_steps}",
             "presets": ", ".join(r.presets or []), "started": _date(r.created), "run": r.run_id} for r in runs]
    return pd.DataFrame(rows, columns=["name", "status", "steps", "presets", "started", "run"])


def run_label(run: Any) -> str:
    """How a run is named in pickers: its name (or id) and status."""
    return f"{run.name or run.run_id} · {run.status}"


def _date(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else ""


def downloads_markdown(downloads: Sequence[Any]) -> str:
    """What each downloadable file is for."""
    if not downloads:
        return "Nothing to download yet: the run has not finished."
    return "\n".join(f"- **{d.name}**: {d.label}" for d in downloads)


def sanitise_user(name: str) -> str | None:
    """A login name as a workspace user id (^[a-z0-9][a-z0-9-]{2,63}$), or None when nothing usable is left."""
    clean = re.sub(r"[^a-z0-9-]+", "-", str(name or "").lower()).strip("-")[:64]
    if len(clean) < 3:
        clean = (clean + "-user") if clean else ""
    return clean if USER_ID.match(clean) else None


# -- inpainting -----------------------------------------------------------------------
def editor_image_and_mask(editor: Any, uploaded_mask: Any = None) -> tuple[Any, Any]:
    """From an ImageEditor value {background, layers, composite} (PIL images): the picture and an L-mode mask,
    white where the user painted (the alpha of the drawn layers), or from an uploaded black/white mask."""
    from PIL import Image, ImageChops

    if not editor or editor.get("background") is None:
        raise ValueError("upload a picture to inpaint first")
    image = editor["background"].convert("RGB")
    if uploaded_mask is not None:
        return image, uploaded_mask.convert("L").resize(image.size)
    mask = Image.new("L", image.size, 0)
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").resize(image.size)
        mask = ImageChops.lighter(mask, alpha)
    mask = mask.point(lambda v: 255 if v > 0 else 0)
    if mask.getextrema()[1] == 0:
        raise ValueError("the mask is empty: paint over the part of the picture to replace (brush tool)")
    return image, mask
