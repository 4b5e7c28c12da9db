"""ANIL (Raghu et al., 2020): MAML's inner loop on the linear head only, over a meta-learned encoder.

The inner loop is a few steps of logistic regression written in closed form
(``base.linear_head_steps``), so the outer update is full second-order MAML on the head at the
cost of first-order, and the adapted model exports to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn

from metascreen.models.learners.base import EpisodicLearner, linear_head_steps


class AnilLearner(EpisodicLearner):
    """Meta-learned head initialisation (w0, b0), per-step learning rates and L2 strength."""

    name = "maml"

    def __init__(
        self, encoder: nn.Module, emb_dim: int, inner_steps: int = 5, inner_lr: float = 1.0
    ) -> None:
        """Create the head initialisation and the learned inner-loop learning rates."""
        super().__init__(encoder)
        self.w0 = nn.Parameter(torch.zeros(emb_dim))
        self.b0 = nn.Parameter(torch.zeros(()))
        self.log_lrs = nn.Parameter(
            torch.full((inner_steps,), float(torch.log(torch.tensor(inner_lr))))
        )
        self.log_l2 = nn.Parameter(torch.tensor(-4.0))

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """Adapt (w0, b0) on the support embeddings, then score the query."""
        w, b = linear_head_steps(
            support_emb, support_y, self.w0, self.b0, self.log_lrs.exp(), self.log_l2.exp()
        )
        return (query_emb * w).sum(-1) + b
