"""Encoders: molecule features → embedding. The model file knows nothing about training."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class EncoderConfig(BaseModel):
    """Fingerprint/descriptor MLP encoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mlp"] = "mlp"
    hidden: tuple[int, ...] = Field((1024, 512), description="hidden layer widths")
    out_dim: int = Field(512, description="embedding size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    input_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the input features")


class MLPEncoder(nn.Module):
    """MLP over fixed-length features.

    Shapes:
        x: (n, in_dim) → (n, out_dim)
    """

    def __init__(self, in_dim: int, cfg: EncoderConfig) -> None:
        """Build Linear-LayerNorm-ReLU-Dropout blocks and a linear output layer."""
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(cfg.input_dropout)]
        prev = in_dim
        for h in cfg.hidden:
            layers += [nn.Linear(prev, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            prev = h
        layers.append(nn.Linear(prev, cfg.out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = cfg.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of feature rows."""
        return self.net(x)


def build_encoder(in_dim: int, cfg: EncoderConfig) -> nn.Module:
    """Encoder for ``cfg.kind``."""
    return MLPEncoder(in_dim, cfg)
