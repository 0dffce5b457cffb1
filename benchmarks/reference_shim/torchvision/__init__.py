"""A stand-in for torchvision, for `benchmarks.whole_run` only: just what diffusers' reference script
`examples/dreambooth/train_dreambooth_lora.py` uses (`from torchvision import transforms`).

Why it exists: the reference imports torchvision for four image transforms, and torchvision's wheels pin a torch
build (on PyPI, the CUDA one: gigabytes) that would replace this project's CPU torch. The benchmark puts this
folder first on PYTHONPATH for the reference's process only; nothing else imports it. It has no package
metadata: diffusers asks importlib.metadata whether torchvision is installed and gets "no". transformers 5 only
asks importlib.util.find_spec, so it does find this shim and imports a few names from it at import time
(`io`, `transforms.v2.functional`, `transforms.functional.pil_to_tensor`, `InterpolationMode`): the last two
are real here; `io` and `transforms.v2.functional` are stubs whose names raise on use (nothing on the reference
script's path uses them).

Semantics follow torchvision's for the cases the script exercises (PIL images in, a float tensor out):
Resize(int) scales the shorter side to `size`; RandomCrop draws its corner with torch.randint, so the seed the
script sets (accelerate's set_seed) governs it as it would govern torchvision.
"""

__version__ = "0.0.0+benchmark-shim"

from . import transforms  # noqa: E402,F401
