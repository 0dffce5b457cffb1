"""Tiny, randomly initialised Stable Diffusion 3 and FLUX.1 base models, built offline.

    python -m studio.world.flow_bases --family {sd3,flux} --out DIR [--seed N]

The studio trains SD3 and FLUX.1 (flow matching, transformer denoisers, a T5
text encoder) as well as SD 1.x/2.x/XL, but the real checkpoints are tens of
gigabytes and nothing may be downloaded in tests. These builders write
standard diffusers folders with the real pipelines' layout and classes, small
enough that a CPU trains one to memorise a 64 px picture in seconds: the
memorisation tests run the studio's SD3/FLUX code paths end to end on them,
and a user can try those paths without the 20 GB download.

Everything comes from parts the project ships: the built-in model's pretrained
VAE and CLIP tokenizer, and a T5 tokenizer over the same word list built here.
The VAE gains a nonzero shift_factor, as SD3's and FLUX's have, so a trainer
that forgets the shift is caught; SD3's is also widened to SD3's 16 latent
channels (see SD3_LATENT_CHANNELS). The text encoders and transformers are
random (seeded: the same seed writes byte-identical files), so the pictures
are noise until trained.
"""
from __future__ import annotations

import argparse
import random
import shutil
import string
from pathlib import Path

import numpy as np
import torch

from studio.models.sources import BUILTIN_MODEL_DIR
from studio.world.render import render, sample_scene
from studio.world.tokenizer import tokenizer_words

# The T5 tokenizer's model_max_length; pass it as the pipelines' max_sequence_length
# (their defaults, 256 for SD3 and 512 for FLUX, work but waste time on padding).
T5_MAX_LENGTH = 32
# 64 px images -> 16x16 latents (vae_scale_factor 4) -> 64 FLUX tokens (packed 2x2), 256 SD3 tokens (patch 1).
RESOLUTION = 64
LATENT_SIZE = RESOLUTION // 4
# SD3 gets the built-in VAE widened to SD3's real 16 latent channels (each of the 4
# repeated): diffusers' StableDiffusion3InpaintPipeline refuses any transformer whose
# in_channels is not 16 (or 33). FLUX keeps the 4 channels, packed 2x2 into 16 per token.
SD3_LATENT_CHANNELS = 16
FLUX_LATENT_CHANNELS = 4

CLIP_HIDDEN = 32
CLIP_PROJECTION = 32
# SD3 concatenates the two CLIPs' hidden states (2 x 32) and zero-pads them to the
# T5 width, so T5 must be at least that wide or the pipeline silently crops them.
T5_D_MODEL = 2 * CLIP_HIDDEN
TRANSFORMER_HEADS = 4
# 4 x 16 = 64 wide: enough to memorise a picture, at ~20 ms a training step (batch 2, 1 CPU thread).
TRANSFORMER_HEAD_DIM = 16

# Used when the built-in VAE's latents happen to average ~0: a zero shift would
# hide a trainer that forgets to subtract it, which is what the nonzero shift is for.
_FALLBACK_SHIFT = 0.1
_SHIFT_SCENES = 32

# Salts for per-component seeds: each part's weights depend only on (seed, part),
# not on what was built before it (e.g. FLUX's guidance_embeds changes only the transformer).
_SALT = {"text_encoder": 1, "text_encoder_2": 2, "text_encoder_3": 3, "transformer": 4}


def _seed(seed: int, part: str) -> None:
    torch.manual_seed(seed * 100 + _SALT[part])


# --- tokenizers ---------------------------------------------------------------------


def clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(BUILTIN_MODEL_DIR / "tokenizer")


def t5_tokenizer():
    """A T5 tokenizer (Unigram, like T5's SentencePiece) in which every world word is one token.

    Layout as T5's: "<pad>"=0, "</s>"=1, "<unk>"=2, and "</s>" appended to every
    sequence. Words are lower-case like the CLIP tokenizer's, plus capitalised
    forms ("A photo of ..." is a common prompt; T5 is case-sensitive, and
    transformers 5 rebuilds a T5 tokenizer's pipeline on load, dropping any
    normaliser but SentencePiece's, so it cannot lower-case for us). Single
    characters, scored far below whole words, spell out anything else, so an
    identifier the vocabulary lacks still gets distinct tokens rather than "<unk>".
    """
    from transformers import T5TokenizerFast

    words = tokenizer_words()
    pieces = [f"\u2581{w}" for w in words]
    pieces += [f"\u2581{w.capitalize()}" for w in words if w.capitalize() != w]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -1.0) for p in dict.fromkeys(pieces)]
    vocab += [("\u2581", -8.0)] + [(c, -10.0) for c in chars]
    # extra_ids=0: T5's 100 sentinel tokens only matter for its span-corruption pretraining.
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_LENGTH)


# --- models -------------------------------------------------------------------------


def _clip_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=CLIP_HIDDEN, intermediate_size=4 * CLIP_HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77, projection_dim=CLIP_PROJECTION,
        hidden_act="gelu", bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_encoder(tokenizer):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer), d_model=T5_D_MODEL, d_kv=16, d_ff=2 * T5_D_MODEL, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=T5_MAX_LENGTH,
        # T5 v1.1 (SD3's and FLUX's T5-XXL) uses gated GELU; no dropout so a trained
        # text encoder behaves the same in train and eval mode.
        feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def latent_shift(vae) -> float:
    """The mean of the VAE's latents over a fixed set of world scenes, rounded so the
    config is the same on every machine."""
    rng = random.Random(0)
    images = np.stack([np.asarray(render(sample_scene(rng), i, RESOLUTION)) for i in range(_SHIFT_SCENES)])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean.mean().item()
    return round(mean, 4) if abs(mean) >= 0.01 else _FALLBACK_SHIFT


def _widen_latents(base, channels: int) -> dict[str, torch.Tensor]:
    """The weights of `base` re-laid for `channels` latent channels, each old channel
    repeated: the encoder writes every old channel into all its copies, and the decoder
    reads the copies' mean, so decode(encode(x)) is exactly the old VAE's."""
    old = base.config.latent_channels
    copies = channels // old
    latent = torch.arange(channels) % old
    moments = torch.cat([latent, latent + old])  # the encoder emits [means, log-variances]
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    sd["encoder.conv_out.weight"] = sd["encoder.conv_out.weight"][moments]
    sd["encoder.conv_out.bias"] = sd["encoder.conv_out.bias"][moments]
    if "quant_conv.weight" in sd:
        sd["quant_conv.weight"] = sd["quant_conv.weight"][moments][:, moments] / copies
        sd["quant_conv.bias"] = sd["quant_conv.bias"][moments]
    if "post_quant_conv.weight" in sd:
        sd["post_quant_conv.weight"] = sd["post_quant_conv.weight"][latent][:, latent] / copies
        sd["post_quant_conv.bias"] = sd["post_quant_conv.bias"][latent]
    sd["decoder.conv_in.weight"] = sd["decoder.conv_in.weight"][:, latent] / copies
    return sd


def flow_vae(latent_channels: int | None = None):
    """The built-in model's pretrained VAE, with a nonzero shift_factor as SD3/FLUX VAEs have.

    latent_channels (a multiple of the built-in's 4) widens it: SD3's inpaint pipeline
    accepts only 16-channel latents, SD3's real count.
    """
    from diffusers import AutoencoderKL

    base = AutoencoderKL.from_pretrained(BUILTIN_MODEL_DIR / "vae", local_files_only=True)
    latent_channels = latent_channels or base.config.latent_channels
    if latent_channels % base.config.latent_channels:
        raise ValueError(f"latent_channels must be a multiple of {base.config.latent_channels}, not {latent_channels}")
    # Rebuilt from its config rather than edited in place: from_pretrained records the
    # absolute load path (_name_or_path), which would leak this checkout's location into
    # the written config. Copies of a channel share its statistics, so scaling and shift carry over.
    config = {k: v for k, v in base.config.items() if not k.startswith("_")}
    vae = AutoencoderKL.from_config({**config, "latent_channels": latent_channels, "shift_factor": latent_shift(base)})
    vae.load_state_dict(_widen_latents(base, latent_channels))
    return vae.eval()


# --- pipelines ----------------------------------------------------------------------


def build_tiny_sd3(*, seed: int = 0):
    """A StableDiffusion3Pipeline with the layout of SD3-medium, tiny."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        _seed(seed, "text_encoder")
        text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer))
        _seed(seed, "text_encoder_2")
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer))
        _seed(seed, "text_encoder_3")
        text_encoder_3 = _t5_encoder(t5_tok)
        _seed(seed, "transformer")
        transformer = SD3Transformer2DModel(
            # Patch 1, not SD3's 2: a randomly initialised tiny transformer learns a picture's 2x2 patches through
            # one 64-wide token far more slowly (measured: 15 dB after 1500 steps against 22 dB after 500 at patch
            # 1). The patching is the transformer's own, untouched by the studio (FLUX's 2x2 packing, which the
            # studio does itself, is kept as FLUX has it).
            sample_size=LATENT_SIZE, patch_size=1, in_channels=SD3_LATENT_CHANNELS, out_channels=SD3_LATENT_CHANNELS,
            num_layers=3, attention_head_dim=TRANSFORMER_HEAD_DIM, num_attention_heads=TRANSFORMER_HEADS,
            joint_attention_dim=T5_D_MODEL, caption_projection_dim=TRANSFORMER_HEADS * TRANSFORMER_HEAD_DIM,
            pooled_projection_dim=2 * CLIP_PROJECTION,
            # SD3's default 96 patches a side is for 1536 px; 32 allows up to 128 px here (patch 1)
            # and keeps the fixed position table small.
            pos_embed_max_size=32,
        )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=flow_vae(SD3_LATENT_CHANNELS), text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=clip_tokenizer(), text_encoder_3=text_encoder_3, tokenizer_3=t5_tok,
    )


def build_tiny_flux(*, seed: int = 0, guidance_embeds: bool = True):
    """A FluxPipeline with the layout of FLUX.1-dev (guidance_embeds) or -schnell (without), tiny."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer, t5_tok = clip_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        _seed(seed, "text_encoder")
        text_encoder = CLIPTextModel(_clip_config(tokenizer))
        _seed(seed, "text_encoder_2")
        text_encoder_2 = _t5_encoder(t5_tok)
        _seed(seed, "transformer")
        transformer = FluxTransformer2DModel(
            # The FLUX pipeline packs 2x2 latent patches into tokens itself, so the model's own patch is 1.
            patch_size=1, in_channels=4 * FLUX_LATENT_CHANNELS, num_layers=1, num_single_layers=2,
            attention_head_dim=TRANSFORMER_HEAD_DIM, num_attention_heads=TRANSFORMER_HEADS,
            joint_attention_dim=T5_D_MODEL, pooled_projection_dim=CLIP_HIDDEN,
            guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),  # sums to the head dim
        )
    # FLUX.1-dev's scheduler: the shift grows with the image's token count (64 here).
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=flow_vae(FLUX_LATENT_CHANNELS), text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=t5_tok,
    )


def _save(pipe, folder: str | Path, clip_tokenizers: tuple[str, ...]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves a CLIP tokenizer as tokenizer.json alone; the built-in's files also
    # carry CLIP's classic vocab.json + merges.txt for tools that read those. Contents are
    # copied, not modes: a read-only installed asset folder must not make the copy read-only.
    for name in clip_tokenizers:
        shutil.rmtree(folder / name)
        (folder / name).mkdir()
        for file in (BUILTIN_MODEL_DIR / "tokenizer").iterdir():
            shutil.copyfile(file, folder / name / file.name)
    return folder


def write_tiny_sd3(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random SD3 pipeline to `folder` (a diffusers folder) and return it."""
    return _save(build_tiny_sd3(seed=seed), folder, ("tokenizer", "tokenizer_2"))


def write_tiny_flux(folder: str | Path, *, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """Write a tiny random FLUX.1 pipeline to `folder` (a diffusers folder) and return it."""
    return _save(build_tiny_flux(seed=seed, guidance_embeds=guidance_embeds), folder, ("tokenizer",))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("sd3", "flux"), required=True)
    parser.add_argument("--out", required=True, help="folder to write the diffusers pipeline into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-guidance-embeds", action="store_true",
                        help="flux only: no guidance embedding, like FLUX.1-schnell")
    args = parser.parse_args(argv)
    if args.family == "sd3":
        folder = write_tiny_sd3(args.out, seed=args.seed)
    else:
        folder = write_tiny_flux(args.out, seed=args.seed, guidance_embeds=not args.no_guidance_embeds)
    print(folder)


if __name__ == "__main__":
    main()
