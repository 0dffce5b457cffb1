"""Pure functions that turn engine answers into what the UI shows.

No gradio here: every function takes plain data (events, reports, configs) and
returns plain data (DataFrames, lists, markdown), so it is testable alone.
"""
from __future__ import annotations

import re
import tomllib
from typing import Any, Iterable, Sequence

import pandas as pd

LOSS_SERIES = (("total", "loss"), ("instance", "instance_loss"), ("prior", "prior_loss"))

# The engine knobs offered in the Train tab's "Advanced" accordion, in display order.
ADVANCED_FIELDS = (
    "max_steps", "learning_rate", "batch_size", "lora_rank", "with_prior_preservation", "num_class_images",
    "prior_loss_weight", "snr_gamma", "offset_noise", "resolution", "mixed_precision", "gradient_checkpointing",
    "preview_every", "checkpoint_every", "seed",
)
# Fields where 0 means "derive it" (shown as 0 unless the user typed a number).
AUTO_ZERO = ("max_steps", "preview_every")
USER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")


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
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "str"})  # typed even when empty: the plot's axes


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
    """ "step 12/40 · 1.3 it/s · ETA 0:20" from the latest step events ("" before the first step)."""
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
    eta = format_duration(max(0, last.max_steps - last.step) / rate)
    return f"step {last.step}/{last.max_steps} · {speed} · ETA {eta}"


def class_images_text(events: Iterable[Any]) -> str:
    progress = _kind(events, "class_images")
    if not progress:
        return ""
    last = progress[-1]
    reused = f" ({last.reused} reused from cache)" if last.reused else ""
    state = "done" if last.total and last.done >= last.total else "drawing"
    return f"class images {last.done}/{last.total} · {state}{reused}"


def status_markdown(state: Any | None, events: Iterable[Any]) -> str:
    """Run status, queue position, latest phase, notices and (on failure) the error with advice."""
    if state is None:
        return "No run yet. Curate photos, then press **Start**."
    events = list(events)
    lines = [f"**Run `{state.run_id}`: {state.status}**"]
    if state.status == "queued" and state.queue_position > 0:
        lines[0] += f" · {state.queue_position} run(s) ahead of yours"
    phases = _kind(events, "phase")
    if phases and state.status in ("running", "paused", "queued"):
        lines.append(f"phase: {phases[-1].name}" + (f" ({phases[-1].detail})" if phases[-1].detail else ""))
    for notice in _kind(events, "notice")[-3:]:
        lines.append(f"ℹ️ {notice.message}")
    failed = _kind(events, "failed")
    if state.status == "failed" and failed:
        lines.append(f"❌ **{failed[-1].error}**")
        if failed[-1].advice:
            lines.append(f"💡 {failed[-1].advice}")
    finished = _kind(events, "finished")
    if state.status == "finished" and finished:
        lines.append(f"✅ finished in {format_duration(finished[-1].seconds)}; try it in the **Generate** tab")
    return "\n\n".join(lines)


def is_terminal(status: str) -> bool:
    return status in ("finished", "failed", "cancelled", "interrupted")


# -- curation -------------------------------------------------------------------------
def verdict_caption(verdict: Any, manual_crop: bool = False) -> str:
    if verdict.accepted:
        text = f"✓ {verdict.name}"
    else:
        text = f"✗ {verdict.name}: {verdict.reason}"
    if manual_crop:
        text += " · ✂ your crop"
    caption = getattr(verdict, "caption", None)
    if caption:
        text += f" · “{caption if len(caption) <= 40 else caption[:39] + '…'}”"
    if verdict.warnings:
        text += " · ⚠ " + "; ".join(verdict.warnings)
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
    accepted = sum(1 for v in report.verdicts if v.accepted)
    lines = [f"**{accepted} of {len(report.verdicts)} photos accepted.** {report.count_advice}"]
    for verdict in report.verdicts:
        if not verdict.accepted:
            lines.append(f"- ✗ `{verdict.name}`: {verdict.reason}" + (f" — {verdict.advice}" if verdict.advice else ""))
    for warning in report.warnings:
        lines.append(f"- ⚠ {warning}")
    return "\n".join(lines)


# -- configuration --------------------------------------------------------------------
def preset_name(subject_type: str, method: str, available: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """The preset for a subject type and method ("lora"/"full"), plus any override the preset lacks."""
    method = "full" if method.lower().startswith("full") else "lora"
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


def config_table(config: dict[str, Any], sources: dict[str, str] | None, names: Sequence[str] | None = None) -> str:
    """Markdown table: setting | value | why (preset reason, "set by you", derived, or default); no why without sources."""
    names = list(names) if names is not None else list(config)
    rows = ["| setting | value | why |", "|---|---|---|"] if sources is not None else ["| setting | value |", "|---|---|"]
    for name in names:
        row = f"| `{name}` | {format_value(config.get(name)).replace('|', '/')} |"
        if sources is not None:
            row += f" {sources.get(name, 'default').replace('|', '/')} |"
        rows.append(row)
    return "\n".join(rows)


def advanced_values(config: dict[str, Any], sources: dict[str, str]) -> list[Any]:
    """Values to fill the Advanced controls with; derived fields show 0 (= auto)."""
    out = []
    for name in ADVANCED_FIELDS:
        derived = sources.get(name, "").startswith("derived")
        out.append(0 if name in AUTO_ZERO and derived else config.get(name))
    return out


def changed_overrides(values: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Only the Advanced values that differ from what the presets give, so the 'why' stays the preset's."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(base.get(name), int) and not isinstance(base.get(name), bool) and isinstance(value, float):
            value = int(value) if value.is_integer() else value
        if name in AUTO_ZERO and value == 0:
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


def trigger_phrase(config: dict[str, Any]) -> str:
    """The instance prompt of a run's config (plain, or as saved: {config, sources}), e.g. "a photo of sks dog"."""
    config = config.get("config", config) if config else config
    if not config:
        return ""
    template = config.get("instance_prompt", "a photo of {identifier} {class_noun}")
    try:
        return template.format(identifier=config.get("identifier", ""), class_noun=config.get("class_noun", "")).strip()
    except (KeyError, IndexError, ValueError):
        return ""


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


def runs_frame(runs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"run": r["run_id"], "status": r["status"], "steps": f"{r['step']}/{r['max_steps']}",
             "presets": ", ".join(r.get("presets") or [])} for r in runs]
    return pd.DataFrame(rows, columns=["run", "status", "steps", "presets"])


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
