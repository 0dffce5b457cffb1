"""Seconds per DreamBooth step: the studio vs a plain reference-style loop vs the bare UNet step.

    python -m benchmarks.train_step [--steps 20] [--rounds 3] [--methods lora,full] [--base-model PATH] [--sd15 512]

(a) studio: `Studio.train_folder`, timed from its `step` events (previews and checkpoints are outside them);
(b) plain: what the public reference scripts do by default - VAE-encode the images and text-encode the
    prompts at every step; (c) bare: UNet forward + backward + AdamW step on ready latents and embeddings.
All three use the same images, resolution, batch (1 instance + 1 class image), LoRA/full setup and seed.
Measurements alternate A B C A B C ..., so machine noise (the pretraining job) hits all of them alike.
Then one whole studio run with previews and a checkpoint, broken into phases from its events' timestamps.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

PRESET = {"lora": "object-lora", "full": "object-full"}


def studio_steps(studio, photos: Path, out: Path, method: str, steps: int) -> tuple[list[float], list[float]]:
    """(step.seconds, wall between consecutive step events): the second includes emit and loop overhead."""
    from studio.events import read_events

    overrides = common.fast_overrides(max_steps=steps, preview_every=10**5, mixed_precision="no")
    outcome = studio.train_folder(photos, out, [PRESET[method]], overrides)
    assert outcome.status == "finished", outcome
    events = read_events(out / "events.jsonl")
    steps_ev = [e for e in events if e.kind == "step"]
    walls = [b.time - a.time for a, b in zip(steps_ev, steps_ev[1:])]  # no preview/checkpoint between them here
    return [e.seconds for e in steps_ev], walls


def setup(source, method: str, resolution: int):
    """Fresh components with the same trainable weights and optimizer the studio would use."""
    from peft import LoraConfig

    from studio.models.families import load_components

    torch.manual_seed(0)
    comps = load_components(source)
    for m in [comps.vae, comps.unet, *comps.text_encoders]:
        m.requires_grad_(False)
    if method == "lora":
        comps.unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian",
                                          target_modules=list(comps.family.unet_lora_targets)))
        lr = 1e-4
    else:
        comps.unet.requires_grad_(True)
        lr = 2e-6
    comps.unet.train()
    params = [p for p in comps.unet.parameters() if p.requires_grad]
    return comps, params, torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)


def plain_steps(source, method, pixels, prompts, resolution, steps) -> list[float]:
    """Reference-script style: the frozen VAE and text encoder run again at every step."""
    from diffusers import DDPMScheduler

    comps, params, opt = setup(source, method, resolution)
    sched = DDPMScheduler.from_config(comps.scheduler_config)
    g = torch.Generator().manual_seed(0)
    scale, times = comps.vae.config.scaling_factor, []
    for step in range(steps):
        tic = time.perf_counter()
        inst, cls = pixels[0][step % len(pixels[0])], pixels[1][step % len(pixels[1])]
        with torch.no_grad():
            latents = comps.vae.encode(torch.stack([inst, cls])).latent_dist.sample(g) * scale
            cond = comps.family.encode(comps, comps.family.tokenize(comps, prompts), resolution)
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        pred = comps.unet(sched.add_noise(latents, noise, t), t, **cond).sample
        loss = F.mse_loss(pred[:1], noise[:1]) + F.mse_loss(pred[1:], noise[1:])  # instance + prior
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - tic)
    return times


def bare_steps(source, method, pixels, prompts, resolution, steps) -> list[float]:
    """The floor: nothing but UNet forward + backward + optimizer step."""
    comps, params, opt = setup(source, method, resolution)
    with torch.no_grad():
        latents = comps.vae.encode(torch.stack([pixels[0][0], pixels[1][0]])).latent_dist.mean
        cond = comps.family.encode(comps, comps.family.tokenize(comps, prompts), resolution)
    noisy, target, t = latents + torch.randn_like(latents), torch.randn_like(latents), torch.tensor([500, 500])
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        loss = F.mse_loss(comps.unet(noisy, t, **cond).sample, target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
    return times


def sd15_steps(resolution: int, steps: int) -> dict[str, list[float]]:
    """What caching is worth at real size: SD 1.5's published architecture (random weights, the configs of
    benchmarks.memory), LoRA, batch 1 instance + 1 class image. A plain step VAE-encodes the pictures and
    text-encodes the prompts first; a cached step, the studio's, starts from latents and embeddings made once.
    On the built-in model both encoders are tiny, so this is where the difference shows."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel

    from benchmarks.memory import CLIP, UNET, VAE

    torch.manual_seed(0)
    unet, te, vae = UNet2DConditionModel(**UNET), CLIPTextModel(CLIPTextConfig(**CLIP)), AutoencoderKL(**VAE)
    for m in (unet, te, vae):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
    pixels = torch.rand(2, 3, resolution, resolution) * 2 - 1
    ids = torch.randint(0, CLIP["vocab_size"], (2, 77))

    def encode():
        with torch.no_grad():
            return vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor, te(ids)[0]

    cached = encode()

    def step(plain: bool) -> float:
        tic = time.perf_counter()
        latents, cond = encode() if plain else cached
        noise, t = torch.randn_like(latents), torch.randint(0, 1000, (2,))
        F.mse_loss(unet(latents + noise, t, cond).sample, noise).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - tic

    step(False)  # warm-up: first-call allocations
    times: dict[str, list[float]] = {"plain": [], "cached": []}
    for _ in range(steps):  # alternated, so machine noise hits both alike
        times["plain"].append(step(True))
        times["cached"].append(step(False))
    return times


def phase_breakdown(studio, photos: Path, out: Path, steps: int) -> list[tuple[str, float]]:
    """One whole LoRA run with the preset's previews, a mid-run checkpoint and fresh class images."""
    from studio.events import read_events

    overrides = common.fast_overrides(max_steps=steps, checkpoint_every=steps // 2, num_class_images=8,
                                      class_image_steps=25, preview_steps=20, preview_seeds=[0, 1])
    tic = time.perf_counter()
    studio.train_folder(photos, out, ["object-lora"], overrides)
    wall = time.perf_counter() - tic
    ev = read_events(out / "events.jsonl")
    at = {e.name: e.time for e in ev if e.kind == "phase"}  # the last event of each name wins
    first = {k: next(e.time for e in ev if e.kind == k) for k in ("started", "finished")}
    gaps = {k: sum(b.time - a.time for a, b in zip(ev, ev[1:]) if b.kind == k) for k in ("preview", "checkpoint")}
    train = sum(e.seconds for e in ev if e.kind == "step")
    rows = [("loading (model, photos)", at["class_images"] - ev[0].time),
            ("class-image generation (+ trainable setup)", at["caching"] - at["class_images"]),
            ("caching latents + prompt embeddings", first["started"] - at["caching"]),
            (f"training steps ({steps}, sum of step.seconds)", train),
            ("previews (incl. the step-0 one)", gaps["preview"]), ("checkpoint saves", gaps["checkpoint"]),
            ("final export + verify", first["finished"] - at["saving"])]
    rows.append(("other (emit, loop bookkeeping)", (first["finished"] - ev[0].time) - sum(r[1] for r in rows)))
    rows.append(("total, first event -> finished", first["finished"] - ev[0].time))
    rows.append(("wall of train_folder()", wall))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="A B C rounds, alternated")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--full-run-steps", type=int, default=40, help="steps of the phase-breakdown run (0 = skip)")
    ap.add_argument("--base-model", default=None)
    ap.add_argument("--sd15", type=int, default=0, metavar="PX",
                    help="also time plain vs cached LoRA steps on SD 1.5's architecture at PX (e.g. 512; minutes)")
    ap.add_argument("--sd15-steps", type=int, default=2)
    args = ap.parse_args()
    tmp = common.temp_root("train-step")
    model, described = common.base_model(args.base_model, tmp)
    photos = common.photos_dir()

    from PIL import Image

    from studio.engine import Studio
    from studio.training.batches import image_tensor

    studio = Studio(tmp / "home", base_model=model)
    source = studio.base_models.source()
    from studio.models.families import load_components

    res = load_components(source).native_resolution  # the studio trains at the base model's native size
    common.header("Training step: studio vs plain per-step-encoding loop vs bare UNet step")
    print(f"- base model: {described}; photos: {photos}; batch 1 instance + 1 class image, resolution "
          f"{res} px, {args.steps} steps x {args.rounds} rounds, seed 0\n")
    results: dict[tuple[str, str], list[float]] = {}
    run = 0
    for r in range(args.rounds):
        for method in args.methods.split(","):
            run += 1
            secs, walls = studio_steps(studio, photos, tmp / f"run{run}", method, args.steps)
            results.setdefault((method, "studio"), []).extend(secs)
            results.setdefault((method, "studio wall"), []).extend(walls)
            if r == 0:  # the studio's first run drew the class images: the plain loops use the same ones
                inst = image_tensor([Image.open(p) for p in sorted(photos.glob("*.png"))], res)
                cls = image_tensor([Image.open(p) for p in sorted(studio.workspace.class_image_cache.rglob("0*.png"))], res)
                prompts = [f"a photo of {common.IDENTIFIER} {common.CLASS_NOUN}", f"a photo of a {common.CLASS_NOUN}"]
            results.setdefault((method, "plain"), []).extend(plain_steps(source, method, (inst, cls), prompts, res, args.steps))
            results.setdefault((method, "bare"), []).extend(bare_steps(source, method, (inst, cls), prompts, res, args.steps))
    rows = []
    for method in args.methods.split(","):
        s, sw, p, b = (common.median(results[(method, k)]) for k in ("studio", "studio wall", "plain", "bare"))
        rows.append((method, s, sw, p, b, f"{p / s:.2f}x {'ok' if p / s >= 1.3 else 'MISSED'}",
                     f"{s / b:.2f}x {'ok' if s / b <= 1.10 else 'MISSED'}"))
    common.table(["method", "studio s/step (step.seconds)", "studio s/step (event to event)", "plain s/step",
                  "bare s/step", "plain/studio (goal >= 1.3x)", "studio/bare (goal <= 1.10x)"], rows)
    # The 10th percentile is the least disturbed by a co-running job (it only ever adds time): same ratios on it.
    p10 = lambda xs: sorted(xs)[len(xs) // 10]
    rows = []
    for method in args.methods.split(","):
        s, p, b = (p10(results[(method, k)]) for k in ("studio", "plain", "bare"))
        rows.append((method, s, p, b, f"{p / s:.2f}x", f"{s / b:.2f}x"))
    common.table(["method (10th percentile)", "studio s/step", "plain s/step", "bare s/step", "plain/studio", "studio/bare"], rows)
    if args.full_run_steps:
        print(f"### Phase breakdown of one whole studio LoRA run ({args.full_run_steps} steps, fresh class images)\n")
        rows = phase_breakdown(Studio(tmp / "home2", base_model=model), photos, tmp / "whole", args.full_run_steps)
        total = rows[-2][1]
        common.table(["phase", "seconds", "% of run"], [(n, s, f"{100 * s / total:.1f}%") for n, s in rows])
    if args.sd15:
        print(f"### At real size: SD 1.5 architecture (random weights), LoRA, {args.sd15} px, batch 1 + 1, "
              f"{args.sd15_steps} steps each, alternated\n")
        times = sd15_steps(args.sd15, args.sd15_steps)
        plain, cached = common.median(times["plain"]), common.median(times["cached"])
        common.table(["plain s/step (encodes every step)", "cached s/step (the studio's way)", "plain/cached"],
                     [(plain, cached, f"{plain / cached:.2f}x")])
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()
