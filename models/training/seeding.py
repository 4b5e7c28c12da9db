"""Seed every RNG in one place."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, numpy and torch (CUDA too); optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code that uses the legacy global RNG
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from metascreen.domains.errors import ConfigError

        raise ConfigError("--device cuda requested but torch sees no CUDA device; use auto or cpu")
    if device not in ("cpu", "cuda"):
        from metascreen.domains.errors import ConfigError

        raise ConfigError(f"device {device!r} is not one of auto|cpu|cuda")
    return torch.device(device)


def _cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), else ``platform.processor()``, else ``"cpu"``."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_info(device: str, amp: bool = True) -> dict[str, object]:
    """Where a training run ran, for the artifact's metadata (``trained_on``).

    ``device`` is the requested one (auto|cpu|cuda), resolved as the training loops resolve it.
    """
    resolved = resolve_device(device)
    cuda = resolved.type == "cuda"
    return {
        "requested": device,
        "device": resolved.type,
        "name": torch.cuda.get_device_name(resolved) if cuda else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_autocast": bool(amp and cuda),
    }
