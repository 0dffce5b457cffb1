"""torchvision.transforms.v2: imported (for its `functional`) by transformers' image processors at import time
whenever a `torchvision` module is found; the reference script does not use it. See the package docstring."""

from . import functional  # noqa: F401
