"""torchvision.transforms, reduced to what the DreamBooth reference script calls (see the package docstring)."""
from __future__ import annotations

from enum import Enum

import torch
from PIL import Image

from . import functional as F


class InterpolationMode(Enum):
    # all of torchvision's members: transformers' image_utils maps PIL's filters onto them at import time
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL = {InterpolationMode.NEAREST: Image.NEAREST, InterpolationMode.NEAREST_EXACT: Image.NEAREST,
        InterpolationMode.BILINEAR: Image.BILINEAR, InterpolationMode.BICUBIC: Image.BICUBIC,
        InterpolationMode.BOX: Image.BOX, InterpolationMode.HAMMING: Image.HAMMING,
        InterpolationMode.LANCZOS: Image.LANCZOS}


def _pair(size) -> tuple[int, int]:
    """(height, width), as torchvision reads an int or a 1- or 2-sequence."""
    if isinstance(size, int):
        return size, size
    size = tuple(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class Resize:
    """An int scales the shorter side to it (aspect kept); a pair (h, w) is the exact size."""

    def __init__(self, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
        self.size, self.interpolation = size, interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if isinstance(self.size, int) or len(self.size) == 1:
            short = self.size if isinstance(self.size, int) else self.size[0]
            if w <= h:
                new_w, new_h = short, int(short * h / w)
            else:
                new_w, new_h = int(short * w / h), short
        else:
            new_h, new_w = self.size
        if (new_w, new_h) == (w, h):
            return img
        return img.resize((new_w, new_h), _PIL[InterpolationMode(self.interpolation)])


class CenterCrop:
    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        th, tw = self.size
        w, h = img.size
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return img.crop((left, top, left + tw, top + th))


class RandomCrop:
    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        if padding or pad_if_needed:
            raise NotImplementedError("the benchmark's torchvision shim does not pad")
        self.size = _pair(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        th, tw = self.size
        w, h = img.size
        if (h, w) == (th, tw):
            return img
        top = int(torch.randint(0, h - th + 1, size=(1,)).item())
        left = int(torch.randint(0, w - tw + 1, size=(1,)).item())
        return img.crop((left, top, left + tw, top + th))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.FLIP_LEFT_RIGHT) if torch.rand(1).item() < self.p else img


class ToTensor:
    def __call__(self, pic) -> torch.Tensor:
        return F.to_tensor(pic)


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = mean, std

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return F.normalize(tensor, self.mean, self.std)


__all__ = ["CenterCrop", "Compose", "InterpolationMode", "Normalize", "RandomCrop", "RandomHorizontalFlip", "Resize",
           "ToTensor", "functional"]
