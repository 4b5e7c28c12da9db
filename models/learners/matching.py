"""Matching networks (Vinyals et al., 2016): attention over the support set's labels."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from metascreen.models.learners.base import EpisodicLearner


class MatchingNetLearner(EpisodicLearner):
    """p(active | q) = Σ_i softmax_i(τ · cos(q, s_i)) · y_i, returned as a logit.

    The attention is class-balanced (each class's weights renormalised by its support share) so a
    skewed support does not tilt every prediction towards the majority class.
    """

    name = "matching"
    batched_training = True

    def __init__(self, encoder: nn.Module) -> None:
        """Wrap ``encoder`` with a learned log-temperature."""
        super().__init__(encoder)
        self.log_tau = nn.Parameter(torch.tensor(math.log(10.0)))

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) logits of the attention-weighted support labels."""
        sim = F.normalize(query_emb, dim=-1) @ F.normalize(support_emb, dim=-1).t()  # (Q, S)
        att = torch.softmax(sim * self.log_tau.exp(), dim=-1)
        n_pos = support_y.sum().clamp_min(1.0)
        n_neg = (1.0 - support_y).sum().clamp_min(1.0)
        p_pos = (att * support_y).sum(-1) / n_pos
        p_neg = (att * (1.0 - support_y)).sum(-1) / n_neg
        eps = 1e-6
        return torch.log(p_pos + eps) - torch.log(p_neg + eps)

    def batched_head(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> torch.Tensor:
        """(B, Q) ``head`` of B tasks with padded supports (see ``EpisodicLearner.batched_head``)."""
        sim = F.normalize(query_emb, dim=-1) @ F.normalize(support_emb, dim=-1).transpose(1, 2)
        ok = (support_mask > 0.5).unsqueeze(1)  # (B, 1, S)
        att = torch.softmax(torch.where(ok, sim * self.log_tau.exp(), -1e4), dim=-1) * ok
        y_pos = (support_y * support_mask).unsqueeze(1)
        y_neg = ((1.0 - support_y) * support_mask).unsqueeze(1)
        p_pos = (att * y_pos).sum(-1) / y_pos.sum(-1).clamp_min(1.0)
        p_neg = (att * y_neg).sum(-1) / y_neg.sum(-1).clamp_min(1.0)
        eps = 1e-6
        return torch.log(p_pos + eps) - torch.log(p_neg + eps)
