"""Prototypical networks (Snell et al., 2017), binary: one prototype per class."""

from __future__ import annotations

import torch

from metascreen.models.learners.base import (
    EpisodicLearner,
    class_prototypes,
    masked_class_prototypes,
)


class ProtoNetLearner(EpisodicLearner):
    """Logit = (d(q, inactive prototype) − d(q, active prototype)) / temperature, squared Euclidean.

    Example:
        >>> learner = ProtoNetLearner(MLPEncoder(2048, EncoderConfig()))
        >>> logits = learner(support_x, support_y, query_x)  # (Q,)
    """

    name = "protonet"
    batched_training = True

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) logits from squared distances to the two class prototypes."""
        neg, pos = class_prototypes(support_emb, support_y)
        d_pos = ((query_emb - pos) ** 2).sum(-1)
        d_neg = ((query_emb - neg) ** 2).sum(-1)
        return (d_neg - d_pos) / query_emb.shape[-1] ** 0.5

    def batched_head(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> torch.Tensor:
        """(B, Q) ``head`` of B tasks with padded supports (see ``EpisodicLearner.batched_head``)."""
        neg, pos = masked_class_prototypes(support_emb, support_y, support_mask)
        d_pos = ((query_emb - pos.unsqueeze(1)) ** 2).sum(-1)
        d_neg = ((query_emb - neg.unsqueeze(1)) ** 2).sum(-1)
        return (d_neg - d_pos) / query_emb.shape[-1] ** 0.5
