"""Typed, strict training configuration and presets.

A run's settings are one frozen `TrainConfig`. Presets are partial TOML files
(`presets/*.toml`, plus the user's own in their workspace) merged in order onto
the defaults, then the user's overrides; values derived from the data (steps
from the number of images, preview cadence) come last. Every value remembers
where it came from, so the UI and the resolved `config.json` can say *why*.
An unknown key or a bad value is a `ConfigError` naming the file, the key and
what is allowed: a typo must never silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


class ConfigError(ValueError):
    """A setting is unknown or out of range; the message names it and what is allowed."""


# Allowed ranges for numeric fields: (min, max), inclusive.
_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (1e-8, 1e-2),
    "text_encoder_learning_rate": (0.0, 1e-2),
    "max_steps": (0, 100_000),
    "steps_per_image": (0, 2_000),
    "min_steps": (1, 100_000),
    "batch_size": (1, 64),
    "gradient_accumulation": (1, 64),
    "lr_warmup_steps": (0, 100_000),
    "max_grad_norm": (0.0, 1e3),
    "weight_decay": (0.0, 1.0),
    "lora_rank": (1, 256),
    "num_vectors": (1, 16),
    "embedding_learning_rate": (0.0, 1.0),
    "lora_alpha": (0.1, 1024),
    "lora_dropout": (0.0, 0.9),
    "conv_rank": (0, 256),
    "conv_alpha": (0.0, 1024),
    "prior_loss_weight": (0.0, 10.0),
    "num_class_images": (1, 5_000),
    "class_image_steps": (1, 500),
    "class_image_guidance": (1.0, 30.0),
    "class_image_batch": (1, 64),
    "snr_gamma": (0.0, 100.0),
    "guidance_embedding": (0.0, 30.0),
    "offset_noise": (0.0, 1.0),
    "resolution": (0, 2048),
    "preview_every": (0, 100_000),
    "preview_steps": (1, 200),
    "preview_budget": (0.01, 1.0),
    "preview_guidance": (1.0, 30.0),
    "checkpoint_every": (0, 100_000),
    "detail_steps": (1, 100_000),
    "detail_learning_rate": (1e-8, 1e-2),
    "detail_keep_weight": (0.0, 100.0),
    "keep_checkpoints": (1, 100),
    "max_bad_steps": (1, 1_000),
    "seed": (0, 2**31 - 1),
}


TOKEN_METHODS = ("textual_inversion", "pivotal")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs to know, with the defaults a new user gets."""

    # The subject. Prompts may use {identifier} and {class_noun}.
    subject_type: Literal["object", "face", "style"] = "object"
    identifier: str = "sks"
    class_noun: str = ""
    instance_prompt: str = "a photo of {identifier} {class_noun}"
    class_prompt: str = "a photo of a {class_noun}"
    # Method: an adapter (LoRA and its kin), the whole UNet, a new word embedding only (textual inversion), or a new
    # word embedding and a LoRA trained together (pivotal tuning).
    method: Literal["lora", "full", "textual_inversion", "pivotal"] = "lora"
    train_text_encoder: bool = False
    # Textual inversion and pivotal tuning: the identifier becomes a new token "<sks>" with `num_vectors` embedding
    # vectors, initialised from the class noun's, trained at `embedding_learning_rate` (0 = learning_rate).
    num_vectors: int = 1
    embedding_learning_rate: float = 5e-3
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    # The adapter (LoRA runs): attention-only LoRA, LoRA on the ResNet convolutions too (LoCon), DoRA, LoKr, LoHa.
    adapter: Literal["lora", "locon", "dora", "lokr", "loha"] = "lora"
    conv_rank: int = 0  # LoCon's rank on the convolutions; 0 = lora_rank
    conv_alpha: float = 0.0  # 0 = conv_rank
    # Optimisation.
    learning_rate: float = 1e-4
    text_encoder_learning_rate: float = 0.0  # 0 = same as learning_rate
    max_steps: int = 0  # 0 = derive from steps_per_image x images
    steps_per_image: int = 100
    min_steps: int = 100
    batch_size: int = 1
    gradient_accumulation: int = 1
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 1e-2
    use_8bit_adam: Literal["auto", "on", "off"] = "auto"  # auto: 8-bit where CUDA and bitsandbytes are there, quietly
    # Prior preservation (the DreamBooth paper's class-specific prior loss).
    with_prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    class_image_steps: int = 25
    class_image_guidance: float = 7.5
    class_image_batch: int = 4
    # Loss options.
    snr_gamma: float = 0.0  # 0 = off; 5.0 is the paper's value
    offset_noise: float = 0.0
    # Flow-matching models (SD3, FLUX.1; studio.models.flow_families): how training times are drawn and weighted
    # (auto = the family's DreamBooth script's: SD3 logit_normal, FLUX none), and FLUX.1-dev's guidance input.
    weighting_scheme: Literal["auto", "none", "logit_normal", "mode", "cosmap", "sigma_sqrt"] = "auto"
    guidance_embedding: float = 3.5
    # Data.
    resolution: int = 0  # 0 = the base model's native size
    random_flip: bool = False
    # Speed and memory.
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    cache_latents: bool = True
    # The denoiser's frozen weights in 8 or 4 bits (bitsandbytes LLM.int8 / NF4, as QLoRA): an adapter trains on top.
    # Needs a CUDA GPU. Frozen text encoders can leave the GPU once every prompt is encoded (they come back only to
    # draw previews): what lets FLUX.1-dev train on a 24 GB card.
    quantize: Literal["none", "int8", "nf4"] = "none"
    offload_text_encoders: bool = False
    # Previews, checkpoints, safety.
    preview_every: int = 0  # 0 = four previews per run
    # The most of the run's time previews may take: a preview due by preview_every is skipped while drawing it (and
    # the last step's) would go over. The untouched model's (step 0, cached across runs) and the last step's are
    # always drawn, as is "Sample now". 1.0 = never skip.
    preview_budget: float = 0.10
    preview_steps: int = 20
    preview_guidance: float = 7.5
    preview_prompts: tuple[str, ...] = ()  # () = subject prompt, class prompt, one re-context
    preview_seeds: tuple[int, ...] = (0, 1)
    checkpoint_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    max_bad_steps: int = 5
    seed: int = 0
    # The detail stage (DreamBooth's second stage, on latent diffusion: studio.training.detail): after training, the
    # VAE decoder is fine-tuned on the subject's photos, class images holding its other pictures as they were.
    # Exported as output/vae (or inside a full fine-tune's model/) and used by Generate. Off: measured in the README.
    detail_stage: bool = False
    detail_steps: int = 300
    detail_learning_rate: float = 5e-5
    detail_keep_weight: float = 1.0  # the class images' pull towards the untouched decoder (its prior preservation)
    # Outputs.
    save_single_file: bool = False
    # The scorecard: subject fidelity, prompt fidelity and drift of every checkpoint, and the one to keep.
    score_checkpoints: bool = True
    scorer_models: tuple[str, ...] = ("facebook/dinov2-small", "openai/clip-vit-base-patch32")  # real base models
    eval_prompts: tuple[str, ...] = ()  # () = derived from the identifier and class noun
    eval_seeds: tuple[int, ...] = (0, 1)

    def prompt(self, template: str) -> str:
        return template.format(identifier=self.token, class_noun=self.class_noun).strip()

    @property
    def learns_token(self) -> bool:
        """Textual inversion and pivotal tuning learn a new token's embedding."""
        return self.method in TOKEN_METHODS

    @property
    def token(self) -> str:
        """The word prompts name the subject by: the identifier, or for a method that learns a token, that new token
        ("<sks>"): a new vocabulary entry, so it can never clash with a word the model knows."""
        if not self.learns_token or (self.identifier.startswith("<") and self.identifier.endswith(">")):
            return self.identifier
        return f"<{self.identifier}>"

    @property
    def token_learning_rate(self) -> float:
        """The rate a learned token's vectors train at (embedding_learning_rate; 0 = learning_rate)."""
        return self.embedding_learning_rate or self.learning_rate

    @property
    def trains_text_encoder(self) -> bool:
        """Whether the prompt embeddings change while training (so they are computed every step, not cached)."""
        return self.train_text_encoder or self.learns_token

    @property
    def resolved_instance_prompt(self) -> str:
        return self.prompt(self.instance_prompt)

    @property
    def resolved_class_prompt(self) -> str:
        return self.prompt(self.class_prompt)

    @property
    def file_stem(self) -> str:
        """What the subject's files are called: `sks-dog` (A1111 and ComfyUI list LoRAs and models by file name)."""
        stem = re.sub(r"[^\w.-]+", "-", f"{self.identifier} {self.class_noun}".strip()).strip("-.")
        return stem or "subject"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config as a run saved it (config.json), already checked when it was resolved; unknown keys are ignored
        so that runs of an older studio still open."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in FIELD_TYPES})


FIELD_TYPES = get_type_hints(TrainConfig)
_DEFAULTS = TrainConfig()


def check_value(name: str, value: Any, origin: str) -> Any:
    """Validate one setting; return it in its canonical type or raise ConfigError."""
    where = f"{origin}: " if origin else ""
    if name not in FIELD_TYPES:
        close = sorted(k for k in FIELD_TYPES if k[:4] == name[:4]) or sorted(FIELD_TYPES)
        raise ConfigError(f"{where}unknown setting {name!r}; known settings include: {', '.join(close)}")
    default = getattr(_DEFAULTS, name)
    annotation = FIELD_TYPES[name]
    if get_origin(annotation) is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{where}{name} = {value!r} is not allowed; use one of: {', '.join(map(str, allowed))}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}{name} = {value!r} must be true or false")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}{name} = {value!r} must be a list")
        item_type = type(default[0]) if default else str
        if not all(isinstance(v, item_type) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where}{name} = {value!r} must be a list of {item_type.__name__}")
        return tuple(value)
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}{name} = {value!r} must be a number")
        if isinstance(default, int) and not float(value).is_integer():
            raise ConfigError(f"{where}{name} = {value!r} must be a whole number")
        lo, hi = _RANGES.get(name, (float("-inf"), float("inf")))
        if not lo <= value <= hi:
            raise ConfigError(f"{where}{name} = {value!r} is out of range; allowed {lo:g} to {hi:g}")
        return type(default)(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}{name} = {value!r} must be text")
        return value
    raise ConfigError(f"{where}{name}: unsupported value {value!r}")


@dataclass(frozen=True)
class Preset:
    """A partial config from a TOML file: [train] values, [why] reasons, a description."""

    name: str
    path: Path
    description: str
    values: dict[str, Any]
    why: dict[str, str]


def load_preset(path: Path) -> Preset:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from exc
    unknown = set(data) - {"description", "train", "why"}
    if unknown:
        raise ConfigError(f"{path}: unknown section or key {sorted(unknown)}; allowed: description, [train], [why]")
    values = {k: check_value(k, v, str(path)) for k, v in data.get("train", {}).items()}
    why = data.get("why", {})
    for key in why:
        if key not in FIELD_TYPES:
            raise ConfigError(f"{path}: [why] explains unknown setting {key!r}")
    return Preset(path.stem, path, str(data.get("description", "")), values, {k: str(v) for k, v in why.items()})


def preset_dirs(extra: Path | None = None) -> list[Path]:
    return [PRESETS_DIR] + ([extra] if extra and extra.is_dir() else [])


def list_presets(user_dir: Path | None = None) -> dict[str, Preset]:
    """Built-in presets, then the user's (a user preset with the same name wins)."""
    found: dict[str, Preset] = {}
    for folder in preset_dirs(user_dir):
        for path in sorted(folder.glob("*.toml")):
            found[path.stem] = load_preset(path)
    return found


@dataclass(frozen=True)
class ResolvedConfig:
    """The config a run actually uses, and where each non-default value came from."""

    config: TrainConfig
    sources: dict[str, str] = field(default_factory=dict)
    num_images: int = 0

    def explain(self, name: str) -> str:
        return self.sources.get(name, "default")

    def to_json(self, **extra: Any) -> str:
        """config.json's text; `extra` adds facts of the run beside the settings (how a multi-process run is split)."""
        return json.dumps({"config": self.config.to_dict(), "sources": self.sources, "num_images": self.num_images,
                           **extra}, indent=2)

    def for_images(self, num_images: int) -> "ResolvedConfig":
        """The same settings for `num_images` photos: only the values that were derived are derived again."""
        auto = {name: 0 for name in AUTO_FIELDS if self.sources.get(name, "").startswith(DERIVED)}
        config, derived = _derive(dataclasses.replace(self.config, **auto), num_images)
        return ResolvedConfig(config, {**self.sources, **derived}, num_images)


def resolve_config(
    presets: list[str] | tuple[str, ...] = (),
    overrides: dict[str, Any] | None = None,
    *,
    num_images: int = 0,
    user_preset_dir: Path | None = None,
) -> ResolvedConfig:
    """Merge defaults <- presets (in order) <- overrides, then derive what depends on the data."""
    available = list_presets(user_preset_dir)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in presets:
        if name not in available:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(available))}")
        preset = available[name]
        for key, value in preset.values.items():
            values[key] = value
            reason = preset.why.get(key)
            sources[key] = f"preset {name}" + (f": {reason}" if reason else "")
    for key, value in (overrides or {}).items():
        values[key] = check_value(key, value, "override")
        sources[key] = "set by you"
    config = TrainConfig(**values)
    config, derived = _derive(config, num_images)
    sources.update(derived)
    check_consistency(config)
    return ResolvedConfig(config, sources, num_images)


# Settings where 0 means "derive it from the photos" (the Train tab shows them as 0 until the user types a number).
AUTO_FIELDS = ("max_steps", "preview_every")
DERIVED = "derived"  # how `sources` marks a derived value


def _derive(config: TrainConfig, num_images: int) -> tuple[TrainConfig, dict[str, str]]:
    changes: dict[str, Any] = {}
    why: dict[str, str] = {}
    if config.max_steps == 0:
        steps = max(config.min_steps, config.steps_per_image * max(num_images, 1))
        changes["max_steps"] = steps
        why["max_steps"] = (
            f"{DERIVED}: {config.steps_per_image} steps per image x {num_images} images"
            + (f", raised to the minimum {config.min_steps}" if steps == config.min_steps else "")
        )
    if config.preview_every == 0:
        steps = changes.get("max_steps", config.max_steps)
        changes["preview_every"] = max(1, steps // 4)
        why["preview_every"] = f"{DERIVED}: four previews per run"
    return dataclasses.replace(config, **changes), why


def _check_token_settings(config: TrainConfig) -> None:
    word = config.identifier.strip().strip("<>")
    if not re.fullmatch(r"[\w-]+", word):
        suggestion = re.sub(r"[^\w-]+", "_", word).strip("_") or "sks"
        raise ConfigError(f"identifier = {config.identifier!r}: {config.method} learns one new token, so the identifier "
                          f"must be one word of letters, digits, '_' or '-'; use identifier = {suggestion!r} "
                          f"(prompts then say <{suggestion}>)")
    if config.method == "textual_inversion" and config.train_text_encoder:
        raise ConfigError("train_text_encoder: textual inversion trains only the new token's embedding, everything "
                          "else frozen; set train_text_encoder = false, or method = 'pivotal' to add a LoRA")
    if config.method == "textual_inversion" and config.save_single_file:
        raise ConfigError("save_single_file writes a whole fine-tuned model; textual inversion's output is an "
                          "embedding file: set save_single_file = false")


def check_consistency(config: TrainConfig) -> None:
    if config.method == "lora" and config.adapter != "locon" and (config.conv_rank or config.conv_alpha):
        raise ConfigError(f"conv_rank and conv_alpha are LoCon's: they do nothing with adapter = {config.adapter!r}; "
                          "set adapter = 'locon' or leave them at 0")
    if config.method == "lora" and config.adapter in ("lokr", "loha") and config.lora_dropout:
        raise ConfigError(f"lora_dropout does not apply to adapter = {config.adapter!r} (peft's LyCORIS adapters use "
                          "their own dropouts); leave it at 0 or pick lora, locon or dora")
    if config.quantize != "none" and config.method == "full":
        raise ConfigError(f"quantize = {config.quantize!r} freezes the model's weights in {config.quantize}; a full "
                          "fine-tune changes them: use method = 'lora', or quantize = 'none'")
    if config.offload_text_encoders and config.trains_text_encoder:
        raise ConfigError("offload_text_encoders moves frozen text encoders off the GPU after encoding the prompts; "
                          "this run trains a text encoder: set train_text_encoder = false, or offload_text_encoders = false")
    if config.learns_token:
        _check_token_settings(config)
    elif config.num_vectors != 1:
        raise ConfigError(f"num_vectors = {config.num_vectors} is textual inversion's: method = {config.method!r} "
                          "learns no token; set method = 'textual_inversion' or 'pivotal', or leave num_vectors at 1")
    if not config.class_noun.strip() and config.subject_type != "style":
        raise ConfigError("class_noun is empty; give the kind of thing your subject is, e.g. 'dog' or 'person'")
    for name in ("instance_prompt", "class_prompt"):
        try:
            config.prompt(getattr(config, name))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{name}: only {{identifier}} and {{class_noun}} may appear in braces ({exc})") from exc
    if not config.identifier.strip():
        raise ConfigError("identifier is empty; pick a rare word such as 'sks'")
