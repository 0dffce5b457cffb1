"""Textual-inversion embedding files: the formats the ecosystem reads, and loading them into a pipeline.

- diffusers (`pipe.load_textual_inversion(path, token=...)`), SD 1.x/2.x: `learned_embeds.safetensors` holding
  {token: (num_vectors, dim)}; the token is also in the metadata.
- SDXL: {"clip_l": (n, 768), "clip_g": (n, 1280)}, one tensor per text encoder: the layout A1111 and ComfyUI read,
  and diffusers with one `load_textual_inversion` call per encoder (`load_into_pipeline` does both).
- A1111 / ComfyUI, SD 1.x/2.x: {"emb_params": (n, dim)}, named after the identifier: those UIs take the trigger word
  from the file's name.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SDXL_KEYS = ("clip_l", "clip_g")
A1111_KEY = "emb_params"
TOKEN_KEY = "token"  # metadata: the token the vectors belong to ("<sks>")


def token_names(token: str, num_vectors: int) -> list[str]:
    """"<sks>" with 3 vectors -> ["<sks>", "<sks>_1", "<sks>_2"]: diffusers' pipelines expand the first into all."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def save_embeddings(folder: Path, token: str, vectors: list[torch.Tensor], *, diffusers_name: str,
                    a1111_name: str) -> dict[str, Path]:
    """Write the vectors (one (n, dim) tensor per text encoder) in the formats above; returns {format: path}."""
    vectors = [v.detach().to("cpu", torch.float32).contiguous() for v in vectors]
    metadata = {TOKEN_KEY: token, "num_vectors": str(vectors[0].shape[0])}
    paths = {"diffusers": folder / diffusers_name, "a1111": folder / a1111_name}
    if len(vectors) == 2:  # SDXL: the same file serves every loader
        state = dict(zip(SDXL_KEYS, vectors))
        save_file(state, str(paths["diffusers"]), metadata=metadata)
        save_file(state, str(paths["a1111"]), metadata=metadata)
    else:
        save_file({token: vectors[0]}, str(paths["diffusers"]), metadata=metadata)
        save_file({A1111_KEY: vectors[0]}, str(paths["a1111"]), metadata=metadata)
    return paths


def read_embeddings(path: Path) -> tuple[str | None, list[torch.Tensor]]:
    """(the token recorded in the file, or None; one (n, dim) tensor per text encoder) from any format above."""
    with safe_open(str(path), "pt") as fh:
        keys = list(fh.keys())
        token = (fh.metadata() or {}).get(TOKEN_KEY)
        if set(keys) == set(SDXL_KEYS):
            return token, [_two_dims(fh.get_tensor(k)) for k in SDXL_KEYS]
        if len(keys) != 1:
            raise ValueError(f"{path.name} is not a textual-inversion embedding (keys: {', '.join(keys[:5])})")
        key = keys[0]
        return token or (None if key == A1111_KEY else key), [_two_dims(fh.get_tensor(key))]


def is_embeddings_file(path: Path) -> bool:
    """An embedding file (any format above), as opposed to a LoRA: a LoRA has many layer tensors."""
    try:
        read_embeddings(path)
        return True
    except Exception:
        return False


def load_into_pipeline(pipe, path: Path, token: str | None = None) -> str:
    """Add the embedding's token to the pipeline's tokenizer(s) and text encoder(s) with diffusers' own loader;
    returns the token prompts use. `token` overrides the one recorded in the file (an A1111 file records none)."""
    recorded, vectors = read_embeddings(path)
    token = token or _token(path, recorded)
    if len(vectors) == 2:
        pipe.load_textual_inversion(vectors[0], token=token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(vectors[1], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
    else:
        pipe.load_textual_inversion(str(path), token=token)
    return token


def embedding_token(path: Path) -> str:
    """The token a prompt uses for this embedding file (its recorded one, else A1111's: the file's name)."""
    return _token(path, read_embeddings(path)[0])


def _token(path: Path, recorded: str | None) -> str:
    return recorded or f"<{path.stem}>"  # an A1111 file records none: those UIs name the token by the file


def spell_token(prompt: str, token: str) -> str:
    """A prompt that names the subject by its plain identifier ("a photo of sks star") says the learned token
    ("<sks>") instead, so one prompt draws the same subject with every method's model (a compare grid of DreamBooth,
    LoRA and textual inversion). A prompt that already says the token is left alone."""
    import re

    if token in prompt:
        return prompt
    word = re.escape(token.strip("<>"))
    return re.sub(rf"(?<![\w<]){word}(?![\w>])", token, prompt)


def _two_dims(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.unsqueeze(0) if tensor.ndim == 1 else tensor
