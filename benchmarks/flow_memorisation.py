"""Would the memorisation test catch a wrong objective? The tiny SD3 and FLUX.1 models trained on one photo, as the
studio trains them and with one deliberate mistake each, then sampled by diffusers' own pipeline.

    python -m benchmarks.flow_memorisation [--steps 500] [--families sd3,flux]

Each row is PSNR (dB) of the pipeline's picture of "a photo of sks star" (20 steps, 2 seeds, mean) against the
training photo; the VAE's own round trip is the ceiling, the untrained model the floor. The mistakes, each one a bug
that trains without an error:
  flipped target   the target's sign reversed (x_0 - noise for FLUX's velocity; -x_0 for SD3's preconditioned x_0)
  swapped sigma    x_t = sigma x_0 + (1 - sigma) noise: noise and image exchanged
  no shift         the VAE's shift_factor left out of the latents (SD3 and FLUX VAEs have one; SD's do not)
  timestep scale   FLUX told t in [0, 1000] instead of [0, 1]; SD3 told t / 1000 instead of t
The two contract tests of tests/training/test_flow_families.py run under each mistake too ("sampler": the loss is
zero exactly for diffusers' velocity, on diffusers' forward process; "inputs": the transformer's inputs in training
equal the pipeline's): a mistake is caught when the memorisation test's threshold (SD3 21.5 dB, FLUX 23 dB) or a
contract test fails.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from studio.engine import Studio
from studio.models.families import FAMILIES
from studio.training.batches import LatentSource
from studio.training.objectives import FlowObjective, Noised
from studio.world.flow_bases import T5_MAX_LENGTH, write_tiny_flux, write_tiny_sd3
from tests.training.test_flow_families import MEMORISED_PSNR

PROMPT = "a photo of sks star"
GUIDANCE = {"sd3": 1.0, "flux": 3.5}


def _flipped_target():
    real = FlowObjective.noised

    def noised(self, latents, noise, indices):
        out = real(self, latents, noise, indices)
        return Noised(out.noisy, out.timesteps, -out.target, out.weights, out.sigmas)
    return mock.patch.object(FlowObjective, "noised", noised)


def _swapped_sigma():
    real = FlowObjective.noised

    def noised(self, latents, noise, indices):
        out = real(self, latents, noise, indices)
        swapped = out.sigmas * latents + (1 - out.sigmas) * noise
        return Noised(swapped, out.timesteps, out.target, out.weights, out.sigmas)
    return mock.patch.object(FlowObjective, "noised", noised)


def _no_shift():
    real = LatentSource.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.shift = 0.0
    return mock.patch.object(LatentSource, "__init__", init)


def _timestep_scale(family: str):
    cls = type(FAMILIES[family])
    real = cls.predict
    factor = 1000.0 if family == "flux" else 1 / 1000.0  # FLUX's predict divides by 1000 itself

    def predict(self, comps, noisy, timesteps, cond, config):
        return real(self, comps, noisy, timesteps * factor, cond, config)
    return mock.patch.object(cls, "predict", predict)


MISTAKES = {
    "as trained": lambda family: contextlib.nullcontext(),
    "flipped target": lambda family: _flipped_target(),
    "swapped sigma": lambda family: _swapped_sigma(),
    "no shift": lambda family: _no_shift(),
    "timestep scale": _timestep_scale,
}


def contracts(family: str, base: Path, mistake) -> list[str]:
    """Each contract test's verdict under `mistake`."""
    from tests.training import test_flow_families as tests

    verdicts = []
    for test in (tests.test_the_loss_is_zero_exactly_when_the_transformer_says_what_diffusers_sampler_integrates,
                 tests.test_the_transformer_sees_in_training_what_it_sees_in_the_pipeline):
        with mistake(family):
            try:
                test((family, base))
                verdicts.append("pass")
            except AssertionError:
                verdicts.append("FAILS")
    return verdicts


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def draw(folder: Path, family: str, seeds=(0, 1)) -> list[np.ndarray]:
    import diffusers

    name = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[family]
    pipe = getattr(diffusers, name).from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return [pipe(PROMPT, height=64, width=64, num_inference_steps=20, guidance_scale=GUIDANCE[family],
                 max_sequence_length=T5_MAX_LENGTH, generator=torch.Generator().manual_seed(s),
                 output_type="np").images[0] for s in seeds]


def round_trip(folder: Path, target: np.ndarray) -> float:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder / "vae")
    with torch.no_grad():
        x = torch.from_numpy(target * 2 - 1).permute(2, 0, 1)[None]
        back = vae.decode(vae.encode(x).latent_dist.mean).sample[0].permute(1, 2, 0).numpy() * 0.5 + 0.5
    return psnr(np.clip(back, 0, 1), target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--families", default="sd3,flux")
    args = parser.parse_args()
    common.header(f"Memorisation on tiny SD3 / FLUX.1: {args.steps} steps, batch 2, full fine-tune at 2e-3, one photo")
    settings = {"class_noun": "star", "method": "full", "learning_rate": 2e-3, "max_steps": args.steps,
                "batch_size": 2, "with_prior_preservation": False, "score_checkpoints": False, "preview_every": 100_000,
                "lr_warmup_steps": 20, "lr_scheduler": "constant_with_warmup", "min_steps": 1}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "photo").mkdir()
        picture = Image.open(common.DEMO / "00.png").convert("RGB").resize((64, 64))
        picture.save(root / "photo" / "00.png")
        target = np.asarray(picture, dtype=np.float32) / 255.0
        for family in args.families.split(","):
            base = (write_tiny_sd3 if family == "sd3" else write_tiny_flux)(root / f"{family}-base")
            floor = np.mean([psnr(im, target) for im in draw(base, family)])
            rows.append([family, "VAE round trip (ceiling)", f"{round_trip(base, target):.1f}", "-", "-", "-", "-"])
            rows.append([family, "untrained (floor)", f"{floor:.1f}", "-", "-", "-", "-"])
            for name, mistake in MISTAKES.items():
                run = root / f"{family}-{name.replace(' ', '-')}"
                tic = time.perf_counter()
                with mistake(family):
                    outcome = Studio(root / "home", base_model=str(base)).train_folder(root / "photo", run, [], settings)
                assert outcome.status == "finished", f"{family} {name}: the run {outcome.status}"
                seconds = time.perf_counter() - tic
                score = np.mean([psnr(im, target) for im in draw(run / "output" / "model", family)])
                threshold = MEMORISED_PSNR[family]  # the memorisation test's own
                rows.append([family, name, f"{score:.1f}", "pass" if score > threshold else "FAILS",
                             *contracts(family, base, mistake), f"{seconds:.0f} s"])
                print(rows[-1], flush=True)
    print()
    common.table(["family", "training", "PSNR (dB)", "memorisation test", "sampler contract", "inputs contract",
                  "training time"], rows)


if __name__ == "__main__":
    main()
