"""Which weights a run trains, and how they are read back for checkpoints and outputs.

LoRA (peft adapters on the UNet's attention projections, optionally the text
encoders') or full fine-tuning (every UNet weight, optionally the text
encoder). Frozen parts are switched off for autograd so no memory is spent on
their gradients.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from studio.config import TrainConfig
from studio.models.families import Components

ADAPTER = "default"


@dataclass
class Trainable:
    """The modules being trained, by name ('unet', 'text_encoder_0', ...)."""

    modules: dict[str, torch.nn.Module]
    method: str

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
        for name, module in self.modules.items():
            params = dict(module.named_parameters())
            for key, value in state.items():
                if key.startswith(name + "."):
                    with torch.no_grad():
                        params[key[len(name) + 1 :]].copy_(value)

    def train(self, mode: bool = True) -> None:
        for module in self.modules.values():
            module.train(mode)


def prepare_trainable(comps: Components, config: TrainConfig) -> Trainable:
    for module in [comps.vae, comps.unet, *comps.text_encoders]:
        module.requires_grad_(False)
    modules: dict[str, torch.nn.Module] = {"unet": comps.unet}
    if config.train_text_encoder:
        modules.update({f"text_encoder_{i}": te for i, te in enumerate(comps.text_encoders)})
    if config.method == "lora":
        from peft import LoraConfig

        def lora(targets):
            return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              init_lora_weights="gaussian", target_modules=list(targets))

        comps.unet.add_adapter(lora(comps.family.unet_lora_targets))
        for name, module in modules.items():
            if name.startswith("text_encoder"):
                module.add_adapter(lora(comps.family.text_lora_targets))
        for module in modules.values():  # adapters train in fp32 even if the base is half
            for param in module.parameters():
                if param.requires_grad:
                    param.data = param.data.float()
    else:
        for module in modules.values():
            module.requires_grad_(True)
    return Trainable(modules, config.method)


def param_groups(trainable: Trainable, config: TrainConfig) -> list[dict]:
    te_lr = config.text_encoder_learning_rate or config.learning_rate
    groups = []
    for name in trainable.modules:
        params = trainable.parameters(name)
        if params:
            groups.append({"params": params, "lr": te_lr if name.startswith("text_encoder") else config.learning_rate, "name": name})
    return groups
