"""torchvision.transforms.functional: the tensor conversions the shim's transforms need, and `pil_to_tensor`,
which transformers' image_utils imports whenever it finds a `torchvision` module (it checks with find_spec only)."""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(pic) -> torch.Tensor:
    """PIL image or HxWxC uint8 array -> CxHxW float tensor in [0, 1] (torchvision's ToTensor)."""
    arr = np.array(pic, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return t.float().div(255) if t.dtype == torch.uint8 else t.float()


def normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    """(tensor - mean) / std per channel; a 1-element mean/std applies to every channel, as in torchvision."""
    mean = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return (tensor - mean) / std


def pil_to_tensor(pic) -> torch.Tensor:
    """PIL image -> CxHxW tensor of the image's own dtype (uint8 for RGB), unscaled."""
    arr = np.array(pic, copy=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
