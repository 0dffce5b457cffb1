"""Tiny random DINOv2 and CLIP models built from configs, offline, saved as a hub id's files would be.

Their numbers mean nothing; they exercise the real-model scorer's whole path (loading from a folder, processing,
embedding) in well under a second.
"""
from __future__ import annotations

import json
from pathlib import Path

from studio.models.clip_vocab import write_clip_tokenizer
from tests.tiny import WORDS

SIZE = 32
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _processor_config(image_type: str) -> dict:
    return {"image_processor_type": image_type, "do_resize": True, "size": {"shortest_edge": SIZE},
            "do_center_crop": True, "crop_size": {"height": SIZE, "width": SIZE}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": MEAN, "image_std": STD,
            "do_convert_rgb": True, "resample": 3}


def build_tiny_dino(folder: Path) -> Path:
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=SIZE, patch_size=8))
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(_processor_config("BitImageProcessor")))
    return folder


def build_tiny_clip(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "vocab", WORDS))
    vocab = len(tokenizer)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SIZE,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({**_processor_config("CLIPImageProcessor"), "processor_class": "CLIPProcessor"}))
    return folder
