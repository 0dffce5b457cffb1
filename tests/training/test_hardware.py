"""Device, precision and optimizer choices: what a run uses, and what it tells the user about it."""
from __future__ import annotations

import pytest
import torch

from studio.config import ConfigError, resolve_config
from studio.training.hardware import make_optimizer


def params():
    return [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}]


def test_8bit_adam_is_auto_by_default_and_quiet_where_it_cannot_be_used():
    assert resolve_config([], {"class_noun": "dog"}).config.use_8bit_adam == "auto"
    optimizer, notice = make_optimizer(params(), use_8bit="auto", device=torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW) and notice is None  # a CPU run has nothing to be told


def test_8bit_adam_asked_for_says_why_it_is_not_used_and_off_never_uses_it():
    optimizer, notice = make_optimizer(params(), use_8bit="on", device=torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW) and "needs CUDA" in notice
    assert make_optimizer(params(), use_8bit="off", device=torch.device("cpu"))[1] is None


def test_8bit_adam_takes_only_its_three_words():
    with pytest.raises(ConfigError, match="use_8bit_adam"):
        resolve_config([], {"class_noun": "dog", "use_8bit_adam": True})
