"""Peak host memory of one DreamBooth training step on Stable Diffusion 1.5's architecture (random weights).

    python -m benchmarks.memory [--resolution 512] [--steps 2] [--cap-gb 20] [--only NAME,...] [--tiny]
    python -m benchmarks.memory --only lora+ckpt,locon+ckpt,dora+ckpt,lokr+ckpt,loha+ckpt   # the adapter types

The UNet, CLIP ViT-L/14 text encoder and VAE are built from SD 1.5's published configs (written below,
nothing downloaded). Each configuration runs in its OWN subprocess (peak RSS is per process; a freed
tensor never gives its pages back to the parent), which reports its ru_maxrss; the parent also polls
its RSS with psutil and kills it past the cap. Latents and token ids are random (cached latents, as in
the published figures); the VAE and text encoder are held in memory as the studio holds them.
Static bytes = parameters (fp32) + gradients + AdamW's two moments, counted analytically;
activation memory = peak - static - the process's baseline (python + torch before any model).
Wait for `studio.world.pretrain` to finish first (--wait-minutes): this needs up to ~19 GB at 512 px.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import json
import resource
import subprocess
import sys
import time

GB = 1024**3
UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
            attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
CLIP = dict(vocab_size=49408, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
           block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4)
# name: (method, gradient checkpointing, train text encoder); "method" is full or an adapter type (studio's own
# peft configs, rank 4). Without --only, the LoRA and full rows run; the other adapters are named with --only.
ADAPTER_TYPES = ("lora", "locon", "dora", "lokr", "loha")
CONFIGS = {f"{m}{'+ckpt' if c else ''}{'+TE' if t else ''}": (m, c, t)
           for m in (*ADAPTER_TYPES, "full") for t in (False, True) for c in (False, True)}
DEFAULT_CONFIGS = [name for name, (m, _, _) in CONFIGS.items() if m in ("lora", "full")]
# Activation guess (fp32, per sample at 512 px) before anything is measured, from this benchmark's LoRA rows
# (2026-12-03: 3.0 GB without, 1.55 GB with checkpointing): only used to pick the resolution; later
# configurations use the activation measured on their LoRA twin.
ACT_GUESS_512 = {False: 3.2 * GB, True: 1.7 * GB}


def child(spec: dict) -> None:
    """One configuration, one process: build, train `steps` steps, print a JSON line."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    method, ckpt, train_te = spec["method"], spec["ckpt"], spec["te"]
    shrink = lambda chans: tuple(max(8, c // 8) for c in chans) if spec["tiny"] else chans  # plumbing test only
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{**UNET, "block_out_channels": shrink(UNET["block_out_channels"]),
                                   "norm_num_groups": 8 if spec["tiny"] else 32})
    te = CLIPTextModel(CLIPTextConfig(**CLIP))
    vae = AutoencoderKL(**VAE)  # held but unused: latents are cached
    for m in (unet, te, vae):
        m.requires_grad_(False)
    trained = [unet] + ([te] if train_te else [])
    if method != "full":
        from studio.config import TrainConfig
        from studio.models.families import ModelFamily
        from studio.training.trainable import adapter_config

        settings = TrainConfig(method="lora", adapter=method, lora_rank=4, lora_alpha=4.0)
        unet.add_adapter(adapter_config(settings, ModelFamily.unet_lora_targets, ModelFamily.unet_conv_targets))
        if train_te:
            te.add_adapter(adapter_config(settings, ModelFamily.text_lora_targets))
    else:
        for m in trained:
            m.requires_grad_(True)
    if ckpt:
        unet.enable_gradient_checkpointing()
        if train_te:
            te.gradient_checkpointing_enable()
    for m in trained:
        m.train()
    params = [p for m in trained for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    n_all = sum(p.numel() for m in (unet, te, vae) for p in m.parameters())
    n_train = sum(p.numel() for p in params)
    b, r = spec["batch"], spec["resolution"] // 8
    tic = time.perf_counter()
    for _ in range(spec["steps"]):
        latents = torch.randn(b, 4, r, r)
        ids = torch.randint(0, CLIP["vocab_size"], (b, 77))
        with torch.set_grad_enabled(train_te):
            cond = te(ids)[0]
        noise, t = torch.randn_like(latents), torch.randint(0, 1000, (b,))
        loss = torch.nn.functional.mse_loss(unet(latents + noise, t, cond).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "baseline": base, "params": n_all * 4, "grads": n_train * 4, "adam": n_train * 8,
                      "trainable": n_train, "seconds": (time.perf_counter() - tic) / spec["steps"]}), flush=True)


def run_child(spec: dict, cap: float) -> dict:
    """Start one configuration; poll its RSS; kill it (only it) above the cap."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(spec)],
                            cwd=common.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polled = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            polled = max(polled, ps.memory_info().rss)
        except psutil.Error:
            break
        if polled > cap + GB:
            proc.kill()
            proc.wait()
            return {"error": f"killed at {polled / GB:.1f} GB (over the cap)"}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1:] }"}
    return {**json.loads(lines[-1]), "polled": polled}


def static_estimate(method: str, te: bool, tiny: bool) -> float:
    unet, clip, vae = (860e6 if not tiny else 20e6), 123e6, 84e6
    trained = (unet + (clip if te else 0)) if method == "full" else 3.0e6 * (1 + te)  # LoCon's convs: ~3 M at rank 4
    return (unet + clip + vae) * 4 + trained * 12 + 0.6 * GB


def wait_for_pretraining(minutes: float) -> bool:
    deadline = time.time() + minutes * 60
    while common.pretraining_running():
        if time.time() > deadline:
            return False
        time.sleep(15)
    return True


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--cap-gb", type=float, default=20.0,
                    help="skip configurations estimated above this (a 24 GB machine, nothing else running)")
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all 8)")
    ap.add_argument("--wait-minutes", type=float, default=60.0, help="wait this long for pretraining to end")
    ap.add_argument("--tiny", action="store_true", help="shrunken UNet: tests the plumbing, figures meaningless")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or DEFAULT_CONFIGS
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    cap, notes = args.cap_gb * GB, []
    if not args.tiny and not wait_for_pretraining(args.wait_minutes):
        names, args.resolution = ["lora+ckpt"], min(args.resolution, 256)
        cap = min(cap, 6 * GB)  # the rule while pretraining runs: nothing above ~6 GB
        notes.append(f"PRELIMINARY: pretraining was still running (it must not be disturbed); only the smallest "
                     f"configuration at {args.resolution} px was run")
    full_guess = static_estimate("full", False, args.tiny) + ACT_GUESS_512[False] * (args.resolution / 512) ** 2 * args.batch
    if any(CONFIGS[n][0] == "full" for n in names) and full_guess > cap and args.resolution > 256:
        notes.append(f"{args.resolution} px full fine-tuning would not fit (estimated {full_guess / GB:.1f} GB > cap "
                     f"{args.cap_gb:g} GB): every configuration runs at 256 px instead")
        args.resolution = 256
    measured_act: dict[bool, float] = {}
    rows, results = [], {}
    for name in sorted(names, key=lambda n: (CONFIGS[n][0] != "lora", CONFIGS[n][0] == "full", n)):  # LoRA first: it calibrates the estimate
        method, ckpt, te = CONFIGS[name]
        act = measured_act.get(ckpt, ACT_GUESS_512[ckpt] * (args.resolution / 512) ** 2 * args.batch)
        estimate = static_estimate(method, te, args.tiny) + act
        if estimate > cap:
            rows.append((name, "-", "-", "-", "-", f"skipped: estimated {estimate / GB:.1f} GB > cap {args.cap_gb:g} GB"))
            continue
        spec = {"method": method, "ckpt": ckpt, "te": te, "resolution": args.resolution, "batch": args.batch,
                "steps": args.steps, "tiny": args.tiny}
        res = run_child(spec, cap)
        if "error" in res:
            rows.append((name, "-", "-", "-", "-", res["error"]))
            continue
        static = res["params"] + res["grads"] + res["adam"]
        activation = res["peak"] - static - res["baseline"]
        if method == "lora" and not te:
            measured_act[ckpt] = max(activation, 0)
        results[name] = (res["peak"], activation)
        rows.append((name, f"{res['trainable'] / 1e6:.1f} M", f"{static / GB:.2f}", f"{res['peak'] / GB:.2f}",
                     f"{activation / GB:.2f}", f"{res['seconds']:.1f} s/step; baseline {res['baseline'] / GB:.2f} GB"))
    rows.append(("8-bit Adam (any)", "-", "-", "-", "-", "n/a on CPU (bitsandbytes' 8-bit AdamW needs CUDA)"))

    common.header(f"Memory: SD 1.5 architecture (random weights), one training step, {args.resolution} px, batch {args.batch}"
                  + (" [--tiny: PLUMBING TEST, NOT SD 1.5]" if args.tiny else ""))
    for note in notes:
        print(f"- {note}")
    print(f"- fp32 on CPU, AdamW, cached (random) latents, {args.steps} steps per process; adapters rank 4 on "
          "to_q/k/v/out (and q/k/v/out_proj with +TE; LoCon also on the ResNet convolutions), built by "
          "studio.training.trainable.adapter_config\n")
    common.table(["configuration", "trainable", "static GB (params+grads+Adam)", "peak RSS GB", "activation GB", "notes"], rows)
    print("Published GPU figures (fp16, for comparison; not this machine): full fine-tune ~9.9 GB with fp16 + gradient "
          "checkpointing + 8-bit Adam + cached latents (T4); LoRA ~8 GB with gradient checkpointing.\n")
    goals = []
    for suffix in ("", "+TE"):
        for ck in ("", "+ckpt"):
            lora, full = results.get(f"lora{ck}{suffix}"), results.get(f"full{ck}{suffix}")
            if lora and full:
                ratio = lora[0] / full[0]
                goals.append((f"LoRA{ck}{suffix} peak / full{ck}{suffix} peak (goal <= 0.5)", f"{ratio:.2f} {'ok' if ratio <= 0.5 else 'MISSED'}"))
        for method in ("lora", "full"):
            plain, ckpt = results.get(f"{method}{suffix}"), results.get(f"{method}+ckpt{suffix}")
            if plain and ckpt and plain[1] > 0:
                ratio = ckpt[1] / plain[1]
                goals.append((f"{method}{suffix}: activation with / without checkpointing (goal <= 0.5)",
                              f"{ratio:.2f} {'ok' if ratio <= 0.5 else 'MISSED'}"))
    if goals:
        common.table(["goal", "value"], goals)


if __name__ == "__main__":
    main()
