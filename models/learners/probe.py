"""Linear probe: logistic regression fitted on each support set over a frozen meta-trained encoder.

The head starts from the prototype direction and runs ``steps`` closed-form gradient steps, so
it is a deterministic function of the support set that exports to ONNX like every other learner.
"""

from __future__ import annotations

import torch
from torch import nn

from metascreen.models.learners.base import EpisodicLearner, class_prototypes, linear_head_steps


class LinearProbeLearner(EpisodicLearner):
    """Per-task L2 logistic regression on normalised embeddings of a frozen encoder."""

    name = "probe"

    def __init__(
        self, encoder: nn.Module, steps: int = 50, lr: float = 2.0, l2: float = 0.01
    ) -> None:
        """Freeze ``encoder``; store the probe's optimisation settings."""
        super().__init__(encoder)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.register_buffer("lrs", torch.full((steps,), lr))
        self.l2 = l2

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (scale-free for the fixed probe learning rate)."""
        e = self.encoder(x)
        return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6)

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """Fit the probe on the support set and score the query."""
        neg, pos = class_prototypes(support_emb, support_y)
        w0 = pos - neg
        b0 = -(w0 * (pos + neg) / 2).sum()
        lrs: torch.Tensor = self.lrs
        w, b = linear_head_steps(support_emb, support_y, w0, b0, lrs, self.l2)
        return (query_emb * w).sum(-1) + b
