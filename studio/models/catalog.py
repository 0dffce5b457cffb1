"""The base models a studio may use: the operator's default, and what a user may name instead.

The catalogue knows, without loading a model, where it comes from, its family,
its native resolution and its tokenizer (identifier checks must not load a
whole model). On a shared Space, visitors may name only models inside the
assets folder, the operator's model's folder and `model_roots`.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

from studio.models.sources import ASSETS_DIR, ModelSource, resolve_source


class ModelCatalog:
    def __init__(self, base_model: str | None = None, *, base_config: str | None = None, allow_pickle: bool = False,
                 shared: bool = False, model_roots: Sequence[Path] = ()) -> None:
        self.base_config = base_config
        self.allow_pickle = allow_pickle and not shared  # a Space never unpickles
        # The operator's base model is trusted: it comes from the command line, not from a visitor.
        self.default = resolve_source(base_model, config_dir=base_config, allow_pickle=self.allow_pickle)
        own = [Path(self.default.location).parent] if self.default.kind in ("folder", "single_file") else []
        self.allowed_roots = [ASSETS_DIR, *own, *map(Path, model_roots)] if shared else None
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def source(self, spec: str | None = None) -> ModelSource:
        """`spec` (a folder, file or hub id; None = the default) as a checked source."""
        if spec is None:
            return self.default
        return resolve_source(spec, config_dir=self.base_config, allow_pickle=self.allow_pickle,
                              allowed_roots=self.allowed_roots)

    @staticmethod
    def reference(source: ModelSource) -> str | None:
        """How a run names its base model: None for the built-in one, so a moved install still finds it; a local
        path made absolute, so the run still finds its model when used from another folder."""
        if source.kind == "builtin":
            return None
        return str(Path(source.location).resolve()) if source.kind in ("folder", "single_file") else source.location

    def tokenizer(self, spec: str | None = None):
        """The model's (first) tokenizer, loaded alone and kept."""
        source = self.source(spec)
        with self._lock:
            if source.label not in self._tokenizers:
                if source.kind in ("builtin", "folder"):
                    from transformers import CLIPTokenizer

                    self._tokenizers[source.label] = CLIPTokenizer.from_pretrained(Path(source.location) / "tokenizer")
                else:
                    from studio.models.families import load_components

                    self._tokenizers[source.label] = load_components(source).tokenizers[0]
            return self._tokenizers[source.label]

    def native_resolution(self, spec: str | None = None) -> int:
        """The model's training size, read from its configs without loading it (512 / 1024 when unknown)."""
        source = self.source(spec)
        if source.kind in ("builtin", "folder"):
            try:
                vae = json.loads((Path(source.location) / "vae" / "config.json").read_text())
                if source.family in ("sd3", "flux"):  # as studio.models.flow_families reads it from the loaded VAE
                    return int(vae["sample_size"])
                unet = json.loads((Path(source.location) / "unet" / "config.json").read_text())
                return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
            except (OSError, KeyError, ValueError):
                pass
        return 1024 if source.family in ("sdxl", "sd3", "flux") else 512  # a hub id ("auto"): SD 1.5's, as before

    def example_contexts(self, spec: str | None = None) -> tuple[str, ...]:
        """Places to draw a subject that this base model knows: the built-in model only knows its world's
        plain backgrounds (no beaches), a real model knows the world."""
        if self.source(spec).kind == "builtin":
            return ("on a pink background", "on a black background")
        return ("on the beach", "in the snow")

    def example_prompt(self, spec: str | None = None) -> str:
        """A prompt to show as an example: a subject and a place this base model can draw."""
        noun = "star" if self.source(spec).kind == "builtin" else "dog"  # the built-in world has shapes, not dogs
        return f"a photo of sks {noun} {self.example_contexts(spec)[0]}"

    def short_name(self, spec: str | None = None) -> str:
        return self.source(spec).label.rstrip("/").split("/")[-1]
