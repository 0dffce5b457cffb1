"""ESTIMATED peak GPU memory of DreamBooth LoRA training of SD 3.5 Medium, SD 3.5 Large and FLUX.1-dev, per preset.

    python -m benchmarks.flow_memory [--resolution 1024] [--batch 1] [--rank 16] [--threads 1] [--json PATH]
    python -m benchmarks.flow_memory --models flux-dev --json /tmp/flux-memory.json

Nothing is downloaded and nothing runs on a GPU: these are estimates until measured on one. About a minute on one
core (FLUX is most of it) and under 5 GB of RAM.

1. Parameters: every component is built on the meta device from its published config (written below) and
   counted (buffers too: SD 3.5's positional-embedding tables are buffers, on the GPU all the same). LoRA
   parameters are sum((in + out) * rank) over the nn.Linear layers named by diffusers' DreamBooth LoRA scripts'
   default targets (peft's rule: the module name is the target or ends with "." + target).
2. Activations are MEASURED on the CPU on a reduced transformer with the real hidden size and one block of each
   kind (plus a first block: its input needs no grad, so it saves less), LoRA (peft) on the targets, fp32 LoRA
   weights, frozen bf16 base, forward under bf16 autocast (the studio's precision scheme). CUDA's autocast runs
   layer_norm in fp32 and the CPU's does not, so a pre-hook on each LayerNorm does what CUDA would. A
   `saved_tensors_hooks` pack hook sums the bytes autograd keeps (deduplicated by storage, parameters excluded),
   by block kind, with and without `enable_gradient_checkpointing()`. Each pass runs at two image-token counts
   (9x9 and 15x15 patches) with the real text length (SD3: 77 CLIP + 77 T5 = 154; FLUX: 512 T5), so
   bytes = fixed (text) part + slope * image tokens fits exactly; a saved tensor with two sequence-length
   dimensions would be materialised attention scores and is scaled quadratically (SDPA's flash kernels, on the
   GPU as on this CPU, save none). The first point of each pass also runs backward (the LoRA weights must get
   gradients); the second is forward only (what autograd keeps is known once forward ends).
   Quantized bases save differently: peft's bitsandbytes LoRA layers do not cast their input to the LoRA dtype
   under CUDA autocast (measured with peft's input casting off), and bitsandbytes' LLM.int8 matmul keeps every
   input in ctx.tensors, outside the saved-tensor hooks and beyond checkpointing's reach (counted by a forward
   pre-hook on each nn.Linear that LLM.int8 would replace). NF4's matmul keeps only the packed weight.
   Not modelled: LLM.int8 returns its input's dtype, and after a LayerNorm under CUDA autocast that is fp32, so
   on a GPU the 8-bit q/k/v chain may keep fp32 tensors where this keeps bf16 ones (the 8-bit row is a floor).
   Extrapolated to the training resolution (1024 px: 128x128 latents, patch 2 -> 4096 image tokens), per sample.
   With checkpointing: the checkpointed block inputs of every block + one block's full set (the block being
   recomputed in backward, the largest kind).
3. Presets: weights (bf16 2 bytes/param; LLM.int8 1 byte + an fp32 scale per output row; NF4 with bitsandbytes'
   blocksize 64 and double quantization, 0.5 + 1/64 + 4/(64*256) bytes; biases, norms and buffers stay bf16),
   LoRA in fp32 + fp32 grads + optimizer state (AdamW 8 bytes/param, 8-bit Adam 2), activations, text encoders
   and VAE (bf16) on the GPU for training or only while caching, plus CUDA_OVERHEAD. Peak = max(caching phase,
   training phase). The caching phase follows diffusers' scripts' order: the transformer (and the LoRA weights)
   is already on the GPU while the prompts are encoded; the text encoders are freed before the latents are
   cached, and encoding one image needs less than they do.
   Not counted beyond CUDA_OVERHEAD: the gradient buffers in flight in backward (about one block input), NF4's
   per-layer dequantized weight, LLM.int8's outlier columns (subA), kernel workspaces, allocator fragmentation.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

from studio.models.families import FAMILIES

GiB = 1024**3
CUDA_OVERHEAD = 1.0 * GiB  # CUDA context + cuBLAS/cuDNN kernels (~0.5 GiB) and allocator slack/transients (~0.5)
CARDS = {"24 GB": 24 * GiB, "16 GB": 16 * GiB}
OTHER = "outside the blocks"  # embedders, final norm and projection, the loss
GRIDS = (9, 15)  # patches per side: image-token counts 81 and 225 collide with no model dimension

# the LoRA targets the studio trains (diffusers' scripts'), as the families define them
SD3_TARGETS = FAMILIES["sd3"].lora_targets
FLUX_TARGETS = FAMILIES["flux"].lora_targets

CLIP_L = dict(vocab_size=49408, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
VAE_16CH = dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False)
PUBLISHED = {"CLIP-L": 123e6, "OpenCLIP bigG": 695e6, "T5-XXL encoder": 4.76e9, "VAE (16 ch)": 84e6}


@dataclass(frozen=True)
class Model:
    key: str
    name: str
    family: str  # "sd3" or "flux": which transformer class and which inputs
    config: dict
    reduced: dict  # overrides that leave a first block + one block of each kind
    text_encoders: tuple[str, ...]
    text_tokens: int  # SD3: 77 CLIP + 77 T5 (the SD3 script's max_sequence_length); FLUX: 512 T5
    targets: tuple[str, ...]
    published: float  # transformer parameters (+ buffers) as published


MODELS = (
    Model("sd3.5-medium", "SD3.5 Medium", "sd3",
          dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
               num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
               pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm",
               dual_attention_layers=tuple(range(13))),
          # first (dual), dual, plain, last (context pre-only); a small positional table (it is a buffer)
          dict(num_layers=4, dual_attention_layers=(0, 1), sample_size=32, pos_embed_max_size=32),
          ("CLIP-L", "OpenCLIP bigG", "T5-XXL encoder"), 154, SD3_TARGETS, 2.5e9),
    Model("sd3.5-large", "SD3.5 Large", "sd3",
          dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
               num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
               pooled_projection_dim=2048, pos_embed_max_size=192, qk_norm="rms_norm"),
          dict(num_layers=3, sample_size=32, pos_embed_max_size=32),  # first, plain, last
          ("CLIP-L", "OpenCLIP bigG", "T5-XXL encoder"), 154, SD3_TARGETS, 8.1e9),
    Model("flux-dev", "FLUX.1-dev", "flux",
          dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
               num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
               axes_dims_rope=(16, 56, 56)),
          dict(num_layers=2, num_single_layers=1),  # first double, double, single
          # FLUX's CLIP-L has no text projection (0.6 M fewer parameters than counted here: immaterial)
          ("CLIP-L", "T5-XXL encoder"), 512, FLUX_TARGETS, 11.9e9),
)


@dataclass(frozen=True)
class Preset:
    name: str
    weights: str  # "bf16", "int8" or "nf4": how the transformer is stored
    checkpointing: bool
    cached: bool  # text embeddings and latents cached: text encoders and VAE leave the GPU before training
    adam_bytes: int  # optimizer state per trainable parameter


PRESETS = (
    Preset("bf16, text encoders on GPU", "bf16", False, False, 8),
    Preset("bf16 + checkpointing + cached embeddings (T5 offloaded)", "bf16", True, True, 8),
    Preset("8-bit (LLM.int8) + checkpointing + cached + 8-bit Adam", "int8", True, True, 2),
    Preset("NF4 (QLoRA) + checkpointing + cached + 8-bit Adam", "nf4", True, True, 2),
)


# ---------------------------------------------------------------- 1. parameters (meta device, nothing allocated)

def build_transformer(model: Model, **overrides):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cls = SD3Transformer2DModel if model.family == "sd3" else FluxTransformer2DModel
    return cls(**{**model.config, **overrides})


def build_component(name: str):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if name == "T5-XXL encoder":
        return T5EncoderModel(T5Config(**T5_XXL))
    if name == "VAE (16 ch)":
        return AutoencoderKL(**VAE_16CH)
    return CLIPTextModelWithProjection(CLIPTextConfig(**(CLIP_L if name == "CLIP-L" else CLIP_G)))


def numel(module) -> int:
    """Parameters and buffers: both sit on the GPU."""
    return sum(t.numel() for t in [*module.parameters(), *module.buffers()])


def base_linears(module) -> list:
    """(name, nn.Linear) of the layers a bitsandbytes config replaces: all of them, not peft's LoRA A/B."""
    import torch

    return [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)
            and not {"lora_A", "lora_B"} & set(name.split("."))]


def lora_params(module, targets, rank: int) -> int:
    """peft's rule; once peft has wrapped a layer, its nn.Linear is "<name>.base_layer"."""
    return sum((m.in_features + m.out_features) * rank for name, m in base_linears(module)
               if any(name.removesuffix(".base_layer") == t or name.removesuffix(".base_layer").endswith("." + t)
                      for t in targets))


def weight_bytes(module, scheme: str) -> float:
    """The transformer on the GPU: quantized Linear weights, everything else (biases, norms, buffers) bf16."""
    linear = [m.weight for _, m in base_linears(module)]
    quantized = sum(w.numel() for w in linear)
    rows = sum(w.shape[0] for w in linear)
    per_param = {"bf16": 2.0, "int8": 1.0, "nf4": 0.5 + 1 / 64 + 4 / (64 * 256)}[scheme]
    scales = rows * 4 if scheme == "int8" else 0  # LLM.int8's fp32 scale per output row (SCB)
    return quantized * per_param + scales + (numel(module) - quantized) * 2


def count_parameters(models, rank: int) -> dict:
    import torch

    counts = {"components": {}, "transformers": {}}
    with torch.device("meta"):
        for name in dict.fromkeys(["VAE (16 ch)", *(te for m in models for te in m.text_encoders)]):
            counts["components"][name] = numel(build_component(name))
        for m in models:
            t = build_transformer(m)
            counts["transformers"][m.key] = {
                "params": sum(p.numel() for p in t.parameters()), "buffers": sum(b.numel() for b in t.buffers()),
                "lora": lora_params(t, m.targets, rank),
                "weights": {s: weight_bytes(t, s) for s in ("bf16", "int8", "nf4")},
                "blocks": block_kinds(t)}
    return counts


def block_kinds(transformer) -> list[str]:
    """One label per block, in order. The first block is its own kind: its input needs no grad (the embedders are
    frozen), so it saves less than the same block further down."""
    labels = []
    for i, block in enumerate(blocks(transformer)):
        label = type(block).__name__.replace("TransformerBlock", " block")
        label += " (dual attention)" if getattr(block, "use_dual_attention", False) else ""
        label += " (context pre-only)" if getattr(block, "context_pre_only", False) else ""
        labels.append(("first: " if i == 0 else "") + label)
    return labels


def blocks(transformer) -> list:
    return [*transformer.transformer_blocks, *getattr(transformer, "single_transformer_blocks", [])]


# ---------------------------------------------------------------- 2. activations (measured, reduced model, CPU)

class Meter:
    """What one forward keeps for backward, by block kind.

    saved: storages autograd saves (pack hook), deduplicated, parameters and buffers excluded; a tensor with two
    sequence-length dimensions is attention scores and goes to `quadratic`, already scaled to the target size.
    stashed: inputs of the nn.Linear layers that need an input grad, which LLM.int8 would keep in ctx.tensors.
    """

    def __init__(self, transformer):
        self.skip = {t.untyped_storage().data_ptr() for t in [*transformer.parameters(), *transformer.buffers()]}
        self.label = OTHER
        self.start({})

    def start(self, scale: dict[int, float]) -> None:
        """`scale`: each sequence length of this run -> its ratio at the target size."""
        self.scale, self.saved, self.stashed, self.keep = scale, {}, {}, []
        self.recording = False

    def pack(self, t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.skip and ptr not in self.saved:
            seq = [self.scale[d] for d in t.shape if d in self.scale]
            self.saved[ptr] = (self.label, storage.nbytes(), seq[-1] * seq[-2] if len(seq) >= 2 else None)
        return t

    def stash(self, module, args) -> None:
        x = args[0]
        ptr = x.untyped_storage().data_ptr()
        if self.recording and x.requires_grad and ptr not in self.stashed:
            self.stashed[ptr] = (self.label, x.untyped_storage().nbytes())
            self.keep.append(x)  # as LLM.int8 would: and no later tensor can reuse the address

    def totals(self) -> dict[str, dict[str, float]]:
        """label -> linear saved bytes, quadratic bytes at the target size, stashed bytes not also saved."""
        out: dict[str, dict[str, float]] = {}
        for label, nbytes, quad in self.saved.values():
            row = out.setdefault(label, {"linear": 0.0, "quadratic": 0.0, "stash": 0.0})
            row["linear" if quad is None else "quadratic"] += nbytes if quad is None else nbytes * quad
        for ptr, (label, nbytes) in self.stashed.items():
            if ptr not in self.saved:
                out.setdefault(label, {"linear": 0.0, "quadratic": 0.0, "stash": 0.0})["stash"] += nbytes
        return out


def fp32_layer_norms(transformer) -> None:
    """CUDA's autocast runs layer_norm in fp32 (it is on CUDA's fp32 list, not on the CPU's), so on a GPU each
    LayerNorm saves an fp32 copy of its input and hands fp32 on. Do what CUDA does (every pass runs under autocast).
    A module hook, not a torch-function mode: checkpointing's recomputation in backward must see it too."""
    import torch

    for m in transformer.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.float()  # affine weights, if any: autocast would hand layer_norm fp32 copies
            m.register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))


def reduced_transformer(model: Model, rank: int):
    """bf16 base with one block of each kind, fp32 LoRA on the targets (the studio keeps trainables in fp32)."""
    import torch
    from peft import LoraConfig

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # never hold an fp32 copy of the base
    try:
        t = build_transformer(model, **model.reduced).to(torch.bfloat16)
    finally:
        torch.set_default_dtype(torch.float32)
    t.requires_grad_(False)
    t.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(model.targets)))
    for p in t.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    fp32_layer_norms(t)
    return t.train()


def inputs(model: Model, grid: int) -> dict:
    """One sample, bf16 as the scripts feed it: latents of grid x grid patches, the real text length."""
    import torch

    bf = dict(dtype=torch.bfloat16)
    text = torch.randn(1, model.text_tokens, 4096, **bf)
    if model.family == "sd3":
        return dict(hidden_states=torch.randn(1, 16, 2 * grid, 2 * grid, **bf), encoder_hidden_states=text,
                    pooled_projections=torch.randn(1, 2048, **bf), timestep=torch.tensor([500.0]))
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
    return dict(hidden_states=torch.randn(1, grid * grid, 64, **bf), encoder_hidden_states=text,
                pooled_projections=torch.randn(1, 768, **bf), timestep=torch.tensor([0.5]),
                guidance=torch.tensor([3.5]), img_ids=img_ids, txt_ids=torch.zeros(model.text_tokens, 3))


def attach(transformer, meter: Meter) -> dict:
    """Label what is saved by the block that saves it; stash the inputs of the layers LLM.int8 would replace.
    Returns block -> label."""
    labels = dict(zip(blocks(transformer), block_kinds(transformer)))
    for block, label in labels.items():
        block.register_forward_pre_hook(lambda m, a, label=label: setattr(meter, "label", label))
        block.register_forward_hook(lambda m, a, o: setattr(meter, "label", OTHER))
    for _, linear in base_linears(transformer):
        linear.register_forward_pre_hook(meter.stash)
    return labels


def one_pass(model: Model, transformer, meter: Meter, labels: dict, target_img: int, checkpointing: bool,
             cast_lora_input: bool):
    """Saved bytes by label at each grid size (fitted later)."""
    import torch
    import torch.nn.functional as F
    from peft.helpers import disable_input_dtype_casting

    if checkpointing:
        def checkpointed(block, *args):  # diffusers' default, with the block's label on the inputs it keeps
            meter.label = labels[block]
            return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)
        transformer.enable_gradient_checkpointing(checkpointed)
    else:
        transformer.disable_gradient_checkpointing()
    points = []
    for i, grid in enumerate(GRIDS):
        n_img = grid * grid
        n_all = n_img + model.text_tokens
        meter.start({n_img: target_img / n_img, n_all: (target_img + model.text_tokens) / n_all})
        kwargs = inputs(model, grid)
        with disable_input_dtype_casting(transformer, active=not cast_lora_input):
            with torch.autocast("cpu", dtype=torch.bfloat16), \
                    torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda t: t):
                meter.recording = True
                pred = transformer(**kwargs).sample
                loss = F.mse_loss(pred.float(), torch.randn(pred.shape))
                meter.recording = False
            if i == 0:
                loss.backward()
                grads = [p.grad for p in transformer.parameters() if p.requires_grad]
                assert all(g is not None for g in grads), "a LoRA weight got no gradient"
                transformer.zero_grad(set_to_none=True)
        points.append((n_img, meter.totals()))
        del pred, loss
        meter.start({})
    return points


def fit(points, target_img: int) -> dict[str, dict[str, float]]:
    """label -> per-sample bytes at the target size: fixed (text) part + slope * image tokens (+ scores)."""
    (n1, a), (n2, b) = points
    out = {}
    for label in a:
        row = {}
        for part in ("linear", "stash"):
            slope = (b[label][part] - a[label][part]) / (n2 - n1)
            row[part + "_per_token"] = slope
            row[part + "_fixed"] = a[label][part] - slope * n1
            row[part] = row[part + "_fixed"] + slope * target_img
        row["quadratic"] = b[label]["quadratic"]
        out[label] = row
    return out


PASSES = {  # name: (checkpointing, peft casts the LoRA input to fp32)
    "bf16": (False, True),
    "checkpointed": (True, True),
    "quantized base": (False, False),  # peft's bitsandbytes layers under CUDA autocast: no input cast
}


def measure(model: Model, rank: int, target_img: int) -> dict:
    transformer = reduced_transformer(model, rank)
    n_peft = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    assert n_peft == lora_params(transformer, model.targets, rank), "the LoRA count formula disagrees with peft"
    meter = Meter(transformer)
    labels = attach(transformer, meter)
    result = {"seconds": {}}
    for name, (ckpt, cast) in PASSES.items():
        tic = time.perf_counter()
        result[name] = fit(one_pass(model, transformer, meter, labels, target_img, ckpt, cast), target_img)
        result["seconds"][name] = time.perf_counter() - tic
    return result


# ---------------------------------------------------------------- 3. presets

def activations(preset: Preset, kinds: list[str], measured: dict, batch: int) -> float:
    """Per-sample bytes from the measured kinds, times the batch (activations are linear in it)."""
    def block(pass_name: str, label: str, int8: bool) -> float:
        row = measured[pass_name][label]
        return row["linear"] + row["quadratic"] + (row["stash"] if int8 else 0.0)

    int8 = preset.weights == "int8"
    if not preset.checkpointing:
        return batch * sum(block("bf16", k, False) for k in [*kinds, OTHER])
    kept = sum(block("checkpointed", k, int8) for k in [*kinds, OTHER])
    recompute = max(block("bf16" if preset.weights == "bf16" else "quantized base", k, int8) for k in set(kinds))
    return batch * (kept + recompute)


def encoders_and_vae(model: Model, counts: dict) -> float:
    """bf16 bytes of the frozen parts that caching can send away."""
    return 2 * sum(counts["components"][name] for name in (*model.text_encoders, "VAE (16 ch)"))


def estimate(model: Model, preset: Preset, counts: dict, measured: dict, batch: int) -> dict:
    t = counts["transformers"][model.key]
    transformer = t["weights"][preset.weights]
    weights = transformer + (0 if preset.cached else encoders_and_vae(model, counts))
    trainable = t["lora"] * (4 + 4 + preset.adam_bytes)  # fp32 weights + fp32 grads + optimizer state
    act = activations(preset, t["blocks"], measured[model.key], batch)
    training = weights + trainable + act + CUDA_OVERHEAD
    caching = (transformer + t["lora"] * 4 + encoders_and_vae(model, counts) + CUDA_OVERHEAD) if preset.cached else 0.0
    return {"model": model.name, "preset": preset.name, "weights": weights, "trainable": trainable,
            "activations": act, "training": training, "caching": caching, "peak": max(training, caching)}


# ---------------------------------------------------------------- report

def gib(v: float) -> str:
    return f"{v / GiB:.1f}"


def fits(peak: float, card: float) -> str:
    return f"yes ({gib(card - peak)} spare)" if peak <= card else f"no (+{gib(peak - card)})"


def print_counts(models, counts: dict, rank: int) -> None:
    rows = []
    for name, n in counts["components"].items():
        rows.append((name, f"{n / 1e6:,.1f} M", f"{PUBLISHED[name] / 1e6:,.0f} M", f"{n / PUBLISHED[name]:.3f}"))
    for m in models:
        t = counts["transformers"][m.key]
        total = t["params"] + t["buffers"]
        rows.append((f"{m.name} transformer", f"{t['params'] / 1e9:.3f} B + {t['buffers'] / 1e9:.3f} B buffers",
                     f"{m.published / 1e9:.1f} B", f"{total / m.published:.3f}"))
    print("Parameter counts (meta device, published configs):\n")
    common.table(["component", "counted", "published", "ratio"], rows)
    common.table(["model", f"LoRA rank {rank} parameters", "targets"],
                 [(m.name, f"{counts['transformers'][m.key]['lora'] / 1e6:.2f} M", ", ".join(m.targets))
                  for m in models])


def print_measured(models, counts: dict, measured: dict, target_img: int) -> None:
    print(f"Measured saved bytes per block and sample (bf16 autocast, CPU), extrapolated to {target_img} image tokens; "
          "'fixed' is the text tokens' part:\n")
    rows = []
    for m in models:
        kinds = counts["transformers"][m.key]["blocks"]
        for label in [*dict.fromkeys(kinds), OTHER]:
            full, ckpt, quant = (measured[m.key][p][label] for p in PASSES)
            rows.append((m.name, label, kinds.count(label) if label != OTHER else 1,
                         f"{full['linear_per_token'] / 1024:.1f}", f"{full['linear_fixed'] / 2**20:.1f}",
                         f"{quant['linear_per_token'] / 1024:.1f}", f"{ckpt['linear_per_token'] / 1024:.1f}",
                         f"{ckpt['stash_per_token'] / 1024:.1f}", f"{full['quadratic'] / 2**20:.1f}",
                         f"{(full['linear'] + full['quadratic']) / 2**20:,.0f}"))
    common.table(["model", "block", "count", "full KiB/img token", "full fixed MiB", "quantized-base full KiB/token",
                  "checkpointed KiB/token", "LLM.int8 stash KiB/token", "N² scores MiB", "full MiB at target"], rows)
    print("Pass times: " + "; ".join(f"{m.name}: " + ", ".join(f"{p} {measured[m.key]['seconds'][p]:.0f} s"
                                                            for p in PASSES) for m in models) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1, help="samples per step (prior preservation doubles it)")
    ap.add_argument("--rank", type=int, default=16)
    keys = [m.key for m in MODELS]
    ap.add_argument("--models", default=",".join(keys), help="comma-separated: " + ", ".join(keys))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    models = [m for m in MODELS if m.key in args.models.split(",")]
    if not models:
        ap.error(f"no known model in {args.models!r}")

    import torch

    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    target_img = (args.resolution // 16) ** 2  # VAE /8, patch 2 (FLUX packs 2x2 latents: the same count)
    counts = count_parameters(models, args.rank)
    measured = {}
    for m in models:
        measured[m.key] = measure(m, args.rank, target_img)
        gc.collect()  # the hooked reduced model sits in reference cycles: free it before building the next
    rows = [estimate(m, p, counts, measured, args.batch) for m in models for p in PRESETS]

    common.header(f"Flow models: ESTIMATED peak GPU memory of DreamBooth LoRA training, {args.resolution} px, "
                  f"batch {args.batch}, rank {args.rank}")
    print("**These are estimates until measured on a GPU.** Weights and optimizer are counted, activations measured "
          f"on the CPU at reduced size and extrapolated; CUDA context and slack assumed {gib(CUDA_OVERHEAD)} GiB.\n")
    print_counts(models, counts, args.rank)
    print_measured(models, counts, measured, target_img)
    common.table(["model", "preset", "weights", "trainable+optimizer", "activations", "training phase",
                  "caching phase", "peak (GiB)", "fits 24 GB?", "fits 16 GB?"],
                 [(r["model"], r["preset"], gib(r["weights"]), gib(r["trainable"]), gib(r["activations"]),
                   gib(r["training"]), gib(r["caching"]) if r["caching"] else "-", gib(r["peak"]),
                   fits(r["peak"], CARDS["24 GB"]), fits(r["peak"], CARDS["16 GB"])) for r in rows])
    print(f"GiB throughout; 24 GB / 16 GB cards taken as 24 / 16 GiB, and a margin under ~1 GiB is within this "
          f"estimate's error. Weights: the transformer, plus text encoders and VAE when they stay for training. "
          f"Training phase: weights + trainable + activations + {gib(CUDA_OVERHEAD)}. Caching phase: transformer + "
          "LoRA + text encoders + VAE + overhead, in diffusers' scripts' order. Caching before the transformer is "
          "loaded would need the text encoders + VAE + overhead alone: " + ", ".join(
              f"{m.name} {gib(encoders_and_vae(m, counts) + CUDA_OVERHEAD)}" for m in models) + ".")
    print(f"\nRun time {time.perf_counter() - tic:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps({"resolution": args.resolution, "batch": args.batch, "rank": args.rank,
                                         "image_tokens": target_img, "cuda_overhead_bytes": CUDA_OVERHEAD,
                                         "counts": counts, "measured": measured, "rows": rows,
                                         "estimate": True}, indent=1))


if __name__ == "__main__":
    main()
