"""Pretrain the built-in tiny Stable Diffusion on the synthetic world.

    python -m studio.world.pretrain --out assets/builtin-model [--resume] [--minutes M] [--seed 0]

Stages: render a fixed dataset -> train a small, near-deterministic VAE on world
scenes, recoloured scenes and two-tone clip-art -> cache latents ->
train text encoder + UNet jointly (epsilon prediction, caption dropout for
classifier-free guidance, EMA) -> export a standard diffusers folder.
--minutes caps the wall time: a stage cut short is continued by --resume.
Every batch is drawn from an RNG seeded by (seed, step), so a resumed run
continues exactly as an uninterrupted one would. Training state lives in
--work (default .cache/pretrain/), which is not meant to be committed.
"""
from __future__ import annotations

import os

# The 2 CPU cores are shared with other jobs: OpenMP's default busy-waiting then makes
# every small op wait on a descheduled thread (measured 4x slower); sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import itertools
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from studio.world.render import BACKGROUNDS, CLASSES, COLOURS, random_caption, render, sample_scene, shape_mask
from studio.world.tokenizer import write_tokenizer

RES = 64
NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", prediction_type="epsilon")
CAPTION_DROPOUT = 0.1
# Offset noise: a per-channel constant added to the noise, so the model learns to move
# the mean of the 16x16 latent; without it SD's schedule leaks the mean of the initial
# noise into the result and the background colour ignores the prompt.
OFFSET_NOISE = 0.1
LATENT_NOISE = 0.02  # the VAE posterior's fixed std (see train_vae)
VAE_CROP = 32  # the VAE trains on random crops: all convolutions, 4x the images per second
VAE_LR = 2e-3


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                         up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[16, 32, 64],
                         layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=RES,
                         mid_block_add_attention=False)


def make_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=RES // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        # Cross-attention only at 8x8 and 4x4 (and the middle): the prompt fixes global
        # attributes, and 16x16 self-attention would cost most of the CPU budget.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)


def render_dataset(n: int, seed: int) -> tuple[np.ndarray, list]:
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = np.stack([np.asarray(render(s, seed * 10_000_000 + i, RES))
                       for i, s in enumerate(tqdm(scenes, desc="render", mininterval=5))])
    return images, scenes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))


def recolour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Permute colour channels and maybe invert, per image: red becomes green or blue,
    yellow becomes cyan or magenta... so the VAE reconstructs colours the world never
    shows (like SD's general-purpose VAE), e.g. a DreamBooth subject's marking.
    Only the VAE sees these; the text-conditioned model sees only the world."""
    perms = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    out = torch.stack([img[perms[k]] for img, k in zip(x, torch.randint(6, (len(x),), generator=g))])
    sign = torch.where(torch.rand(len(x), 1, 1, 1, generator=g) < 0.3, -1.0, 1.0)
    return out * sign


def train_vae(vae, images, args, work: Path, deadline: float) -> None:
    """Train the VAE as a near-deterministic autoencoder on a mix of world scenes (half
    of them recoloured) and two-tone clip-art, then fix its posterior std to LATENT_NOISE.

    Choices measured on this machine (judge agreement on reconstructed world scenes
    after ~400 steps): 64 px batches of 16 at lr 1e-3 gave 35-41 %, 32 px crops
    (fully convolutional, so 4x the images per second) in batches of 48 at lr 2e-3
    gave 85 %, and the demo subject's stripe survived. Near-deterministic because
    with a learned std and SD's tiny KL weight, a small VAE on a short budget keeps
    std ~0.6 against a latent spread of ~0.8, so the UNet's latents are mostly noise.
    The anchor loss puts each 4x4 patch's mean colour in latent channels 0-2 (SD's
    latents are close to that too): the decoder then only has to learn edges."""
    state_path = work / "vae_state.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        vae.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
        start = state["step"]
    bar = tqdm(range(start, args.vae_steps), desc="vae", initial=start, total=args.vae_steps, mininterval=5)
    n_world = args.vae_batch * 3 // 4
    for step in bar:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        world = to_tensor(images[torch.randint(len(images), (n_world,), generator=g).numpy()])
        half = n_world // 2
        x = torch.cat([world[:half], recolour(world[half:], g),
                       to_tensor(two_tone_images(args.vae_batch - n_world, args.seed * 1_000_003 + step))])
        top, left = (4 * torch.randint((RES - VAE_CROP) // 4 + 1, (2,), generator=g)).tolist()
        x = x[:, :, top:top + VAE_CROP, left:left + VAE_CROP]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.vae_steps, VAE_LR, warmup=50)
        mean = vae.encode(x).latent_dist.mean
        rec = vae.decode(mean + LATENT_NOISE * torch.randn(mean.shape, generator=g)).sample
        # L1 beside MSE keeps edges and thin bands sharp; the tiny L2 on the latents
        # stops their scale from drifting (the KL term's only job here).
        loss = (F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * mean.pow(2).mean()
                + F.mse_loss(mean[:, :3], F.avg_pool2d(x, 4)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 250 == 0 or step + 1 == args.vae_steps or time.time() > deadline:
            save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, state_path)
        if time.time() > deadline:
            break
    fix_posterior_std(vae, LATENT_NOISE)


@torch.no_grad()
def fix_posterior_std(vae: AutoencoderKL, std: float) -> None:
    """Make the exported posterior's std exactly the noise the decoder was trained with:
    the log-variance half of quant_conv becomes the constant log(std^2)."""
    channels = vae.config.latent_channels
    vae.quant_conv.weight[channels:] = 0
    vae.quant_conv.bias[channels:] = 2 * math.log(std)


@functools.lru_cache(maxsize=1)  # two_tone_images runs at every VAE step; the palette never changes
def clip_art_palette() -> np.ndarray:
    """Every world colour (objects and backgrounds) with its channels permuted and/or
    inverted: 104 saturated and neutral colours well beyond the world's own eleven."""
    base = np.array(list(COLOURS.values()) + list(BACKGROUNDS.values()), np.float32)
    variants = [c[list(perm)] for c in base for perm in itertools.permutations(range(3))]
    return np.unique(np.array(variants + [255 - v for v in variants]), axis=0)


def two_tone_images(n: int, seed: int) -> np.ndarray:
    """Generic clip-art: a world silhouette crossed by a band of a second colour (random
    orientation, place and width) on a flat ground, colours drawn from clip_art_palette.
    The world itself has no two-coloured objects, so without these the VAE smears
    any DreamBooth subject with a pattern. Only the VAE sees them."""
    rng = np.random.default_rng(seed)
    palette = clip_art_palette()
    side = RES * 2
    out = np.empty((n, RES, RES, 3), np.uint8)
    for k in range(n):
        r = rng.uniform(0.12, 0.27) * side
        cx, cy = rng.uniform(r, side - r, 2)
        shape = np.asarray(shape_mask(str(rng.choice(CLASSES)), cx, cy, r, side), np.float32)[..., None] / 255
        band = np.zeros((side, side, 1), np.float32)
        vertical = rng.random() < 0.5
        lo = int((cx if vertical else cy) + rng.uniform(-0.6, 0.3) * r)
        band[lo:lo + int(rng.uniform(0.2, 0.7) * r)] = 1
        if vertical:
            band = band.transpose(1, 0, 2)
        ground, body, stripe = palette[rng.choice(len(palette), 3, replace=False)] + rng.uniform(-8, 8, (3, 3))
        img = np.broadcast_to(ground, (side, side, 3))
        img = img * (1 - shape) + body * shape
        img = img * (1 - band * shape) + stripe * band * shape
        out[k] = np.clip(img.reshape(RES, 2, RES, 2, 3).mean(axis=(1, 3)), 0, 255).round().astype(np.uint8)
    return out


@torch.no_grad()
def encode_latents(vae, images) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in tqdm(range(0, len(images), 256), desc="encode", mininterval=5):
        post = vae.encode(to_tensor(images[i:i + 256])).latent_dist
        means.append(post.mean), stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


def train_diffusion(unet, text_encoder, tokenizer, latents, scenes, scaling, args, work, deadline) -> int:
    state_path = work / "diffusion_state.pt"
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)  # no decay: unused (rare) token rows must stay put
    ema = [p.detach().clone() for p in params]
    noise_sched = DDPMScheduler(**NOISE_SCHEDULE)
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        unet.load_state_dict(state["unet"]), text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        ema, start = state["ema"], state["step"]
    mean, std = latents
    bar = tqdm(range(start, args.steps), desc="unet", initial=start, total=args.steps, mininterval=5)
    steps_done = start
    for step in bar:
        rng = random.Random(args.seed * 1_000_003 + step)
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(len(scenes), (args.batch,), generator=g)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling
        captions = ["" if rng.random() < CAPTION_DROPOUT else random_caption(scenes[i], rng) for i in idx.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        noise = torch.randn(z.shape, generator=g) + OFFSET_NOISE * torch.randn(z.shape[0], z.shape[1], 1, 1, generator=g)
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        pred = unet(noise_sched.add_noise(z, noise, t), t, text_encoder(ids)[0]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        steps_done = step + 1
        done = steps_done == args.steps or time.time() > deadline
        if (step + 1) % 500 == 0 or done:
            save_atomic({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
                         "opt": opt.state_dict(), "ema": ema, "step": step + 1}, state_path)
        if done:
            break
    with torch.no_grad():  # export the EMA weights
        for e, p in zip(ema, params):
            p.copy_(e)
    return steps_done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="assets/builtin-model")
    ap.add_argument("--work", default=".cache/pretrain")
    ap.add_argument("--resume", action="store_true", help="continue from the training state in --work")
    ap.add_argument("--minutes", type=float, default=75.0, help="wall-time cap; stops early and exports")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=16000)
    ap.add_argument("--vae-steps", type=int, default=1500)
    ap.add_argument("--vae-batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()

    t0 = time.time()
    deadline = t0 + args.minutes * 60
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    work = Path(args.work)
    if not args.resume and work.exists():
        for f in work.glob("*"):
            f.unlink()
    work.mkdir(parents=True, exist_ok=True)
    info_path = work / "info.json"
    info = json.loads(info_path.read_text()) if args.resume and info_path.exists() else {"wall_s": 0.0}

    data_path = work / "dataset.pt"
    if data_path.exists():
        images, scenes = torch.load(data_path, weights_only=False)
    else:
        images, scenes = render_dataset(args.images, args.seed)
        save_atomic((images, scenes), data_path)

    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(work / "tokenizer"))
    vae, text_encoder, unet = make_vae(), make_text_encoder(tokenizer), make_unet()

    train_vae(vae, images, args, work, t0 + 0.3 * (deadline - t0))  # the VAE gets at most 30% of the time
    vae.eval().requires_grad_(False)
    latent_path = work / "latents.pt"
    if latent_path.exists():
        mean, std = torch.load(latent_path)
    else:
        mean, std = encode_latents(vae, images)
        save_atomic((mean, std), latent_path)
    scaling = float(1 / mean.std())
    vae.register_to_config(scaling_factor=scaling)

    steps_done = train_diffusion(unet, text_encoder, tokenizer, (mean, std), scenes, scaling, args, work, deadline)
    info["wall_s"] += time.time() - t0
    info.update(steps=steps_done, planned_steps=args.steps, vae_steps=args.vae_steps, images=args.images,
                seed=args.seed, scaling_factor=scaling)
    info_path.write_text(json.dumps(info, indent=2))

    scheduler = DPMSolverMultistepScheduler(**NOISE_SCHEDULE, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(args.out, safe_serialization=True)
    write_tokenizer(Path(args.out) / "tokenizer")  # transformers 5 saves only tokenizer.json; add CLIP's vocab.json + merges.txt
    (Path(args.out) / "pretrain_info.json").write_text(json.dumps(info, indent=2))
    print(f"exported {args.out}: {steps_done} diffusion steps, {info['wall_s'] / 60:.1f} min wall")


if __name__ == "__main__":
    main()
