"""Keep library chatter (missing torchvision, optional kernels, deprecations) out of the user's way."""
from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    for name in ("transformers", "diffusers", "bitsandbytes", "kernels", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
