"""Which weights a run trains, and how they are read back for checkpoints and outputs.

An adapter through peft (LoRA on the UNet's attention projections; LoCon, the
same plus the ResNet convolutions at their own rank; DoRA; LoKr; LoHa; each
optionally on the text encoders' attention too) or full fine-tuning (every
UNet weight, optionally the text encoder). Frozen parts are switched off for
autograd so no memory is spent on their gradients.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import get_args, get_type_hints

import torch

from studio.config import TrainConfig
from studio.models.families import Components
from studio.models.lora_formats import LYCORIS  # peft's LyCORIS types: diffusers' load_lora_weights cannot read them

ADAPTER = "default"


@dataclass
class Trainable:
    """The modules being trained, by name ('unet' or 'transformer', 'text_encoder_0', ...)."""

    modules: dict[str, torch.nn.Module]
    method: str
    adapter: str | None = None  # "lora", "locon", ... for LoRA and pivotal runs; None otherwise
    token: str | None = None  # the new token of a textual-inversion or pivotal run ("<sks>")

    @property
    def has_adapter(self) -> bool:
        return self.adapter is not None

    def parameters(self, name: str) -> list[torch.nn.Parameter]:
        return [p for p in self.modules[name].parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Only trainable tensors, flat, prefixed with the module name (for checkpoints)."""
        out = {}
        for name, module in self.modules.items():
            for pname, param in module.named_parameters():
                if param.requires_grad:
                    out[f"{name}.{pname}"] = param.detach().to("cpu", copy=True).contiguous()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        saved = adapter_of_state(state)
        if self.has_adapter and saved != self.adapter:
            raise AdapterSettingError(
                f"the checkpoint was trained with adapter = {saved or 'none (a full fine-tune)'!r} and this run asks for "
                f"adapter = {self.adapter!r}: resume with the adapter it was trained with, or start a new run")
        for name, module in self.modules.items():
            params = dict(module.named_parameters())
            for key, value in state.items():
                if key.startswith(name + "."):
                    with torch.no_grad():
                        params[key[len(name) + 1 :]].copy_(value)

    def train(self, mode: bool = True) -> None:
        for module in self.modules.values():
            module.train(mode)


ADAPTERS: tuple[str, ...] = get_args(get_type_hints(TrainConfig)["adapter"])  # config.py owns the list
# Key markers of each adapter's trainable tensors (peft's names), to tell what a checkpoint holds.
_KEY_MARKERS = (("lokr", ".lokr_"), ("loha", ".hada_"), ("dora", ".lora_magnitude_vector"))


class AdapterSettingError(ValueError):
    """A setting the adapter cannot honour; the message names the setting and what is allowed."""


def adapter_of_state(keys) -> str | None:
    """The adapter type a trainable state dict holds (None for a full fine-tune), from its peft key names."""
    keys = list(keys)
    for adapter, marker in _KEY_MARKERS:
        if any(marker in k for k in keys):
            return adapter
    if not any(".lora_A." in k for k in keys):
        return None
    conv = tuple(f".{name}.lora_A." for name in ("conv1", "conv2", "conv_shortcut"))
    return "locon" if any(c in k for k in keys for c in conv) else "lora"


def conv_rank_alpha(config: TrainConfig) -> tuple[int, float]:
    """LoCon's rank and alpha on the convolutions (0 means: the same as the attention's)."""
    rank = config.conv_rank or config.lora_rank
    return rank, config.conv_alpha or float(rank)


def check_adapter_settings(config: TrainConfig, comps: Components | None = None) -> None:
    """Refuse settings an adapter cannot honour, before any weight is touched."""
    adapter = config.adapter
    if adapter not in ADAPTERS:
        raise AdapterSettingError(f"adapter = {adapter!r} is not known; use one of: {', '.join(ADAPTERS)}")
    if config.lora_rank < 1:
        raise AdapterSettingError(f"lora_rank = {config.lora_rank}: the rank must be at least 1")
    if config.conv_rank < 0:
        raise AdapterSettingError(f"conv_rank = {config.conv_rank}: use a positive rank, or 0 for lora_rank")
    if adapter != "locon" and (config.conv_rank or config.conv_alpha):
        raise AdapterSettingError(f"conv_rank / conv_alpha apply to adapter = \"locon\" only (adapter is {adapter!r}): "
                                  "set adapter = \"locon\" or leave conv_rank and conv_alpha at 0")
    if adapter in LYCORIS and config.lora_dropout:
        raise AdapterSettingError(f"lora_dropout = {config.lora_dropout} is LoRA's dropout; peft's {adapter} has none: "
                                  "set lora_dropout = 0")
    import peft

    missing = {"lokr": not hasattr(peft, "LoKrConfig"), "loha": not hasattr(peft, "LoHaConfig"),
               "dora": "use_dora" not in getattr(peft.LoraConfig, "__dataclass_fields__", {})}
    if missing.get(adapter):
        usable = [a for a in ADAPTERS if not missing.get(a)]
        raise AdapterSettingError(f"adapter = {adapter!r} needs a newer peft than the installed {peft.__version__}; "
                                  f"use one of: {', '.join(usable)}")
    if (adapter == "locon" and comps is not None and comps.family.conv_targets
            and not _conv_layer_names(comps.denoiser, comps.family.conv_targets)):
        raise AdapterSettingError(f"adapter = \"locon\" adapts the UNet's ResNet convolutions, and this "
                                  f"{comps.family.name} {comps.family.denoiser_name} has none ({', '.join(comps.family.conv_targets)}): "
                                  "use adapter = \"lora\" or \"dora\"")


def _conv_layer_names(unet: torch.nn.Module, targets) -> list[str]:
    return [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d) and n.rsplit(".", 1)[-1] in targets]


def adapter_config(config: TrainConfig, targets, conv_targets=()):
    """The peft config of `config.adapter` on `targets` (+ LoCon's convolutions at their own rank and alpha)."""
    adapter = config.adapter
    if adapter in LYCORIS:
        from peft import LoHaConfig, LoKrConfig

        # init_weights=True: one factor starts at zero, so step 0 draws exactly like the base model (as LoRA does)
        config_class = LoKrConfig if adapter == "lokr" else LoHaConfig
        return config_class(r=config.lora_rank, alpha=config.lora_alpha, target_modules=list(targets), init_weights=True)
    from peft import LoraConfig

    extra = {}
    if adapter == "dora":
        extra["use_dora"] = True
    if adapter == "locon" and conv_targets:
        rank, alpha = conv_rank_alpha(config)
        targets = [*targets, *conv_targets]
        extra["rank_pattern"] = {name: rank for name in conv_targets}
        extra["alpha_pattern"] = {name: alpha for name in conv_targets}
    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      init_lora_weights="gaussian", target_modules=list(targets), **extra)


_GLOBAL_RNG = threading.Lock()


def prepare_trainable(comps: Components, config: TrainConfig) -> Trainable:
    for module in [comps.vae, comps.denoiser, *comps.text_encoders]:
        module.requires_grad_(False)
    modules: dict[str, torch.nn.Module] = ({} if config.method == "textual_inversion"
                                           else {comps.family.denoiser_name: comps.denoiser})
    if config.trains_text_encoder:  # (SD3 trains its two CLIPs, FLUX its CLIP-L: T5 never, as in their scripts)
        trained = comps.text_encoders[:comps.family.trained_text_encoders]
        modules.update({f"text_encoder_{i}": te for i, te in enumerate(trained)})
    token = None
    if config.learns_token:
        from studio.training.new_tokens import add_new_tokens

        # the vectors are the text encoders' only trainable weights, unless pivotal tuning adds their LoRA too
        add_new_tokens(comps.tokenizers, comps.text_encoders, config.token, config.num_vectors, config.class_noun)
        token = config.token
    if config.method in ("lora", "pivotal"):
        check_adapter_settings(config, comps)
        # The adapters' random initial factors come from `seed`, not from whatever the process drew before:
        # otherwise the same settings train different weights in a fresh process and in a long-lived one. The RNG is
        # the process's: the lock keeps a second job starting on another device from reseeding it mid-draw.
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            comps.denoiser.add_adapter(adapter_config(config, comps.family.lora_targets, comps.family.conv_targets))
            for name, module in modules.items():
                if name.startswith("text_encoder") and config.train_text_encoder:  # no convolutions: LoCon is LoRA
                    module.add_adapter(adapter_config(config, comps.family.text_lora_targets))
        for module in modules.values():  # adapters train in fp32 even if the base is half
            for param in module.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
    elif config.method == "full":  # every weight: the adapter settings (say, from a LoRA preset) do not apply
        for module in modules.values():
            module.requires_grad_(True)
    return Trainable(modules, config.method, effective_adapter(config, comps) if config.method in ("lora", "pivotal")
                     else None, token)


def effective_adapter(config: TrainConfig, comps: Components) -> str:
    """The adapter a run trains: LoCon on a model with no convolutions (SD3, FLUX) is LoRA."""
    return "lora" if config.adapter == "locon" and not comps.family.conv_targets else config.adapter


def param_groups(trainable: Trainable, config: TrainConfig) -> list[dict]:
    te_lr = config.text_encoder_learning_rate or config.learning_rate
    groups = []
    for name, module in trainable.modules.items():
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        params = [p for n, p in named if not _is_new_token(n)]
        if params:
            groups.append({"params": params, "lr": te_lr if name.startswith("text_encoder") else config.learning_rate, "name": name})
        vectors = [p for n, p in named if _is_new_token(n)]
        if vectors:  # no weight decay: it would pull the new word's embedding towards zero, away from real words
            groups.append({"params": vectors, "lr": config.token_learning_rate,
                           "weight_decay": 0.0, "name": f"{name}.new_token"})
    return groups


def _is_new_token(parameter_name: str) -> bool:
    return parameter_name.endswith("token_embedding.vectors")  # studio.training.new_tokens.NewTokenEmbedding
