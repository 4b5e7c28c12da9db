"""Several few-shot heads on one shared encoder, trained jointly and averaged at prediction.

The heads adapt differently — class prototypes (ProtoNet), attention over support labels
(matching networks) and a GP posterior mean (deep-kernel GP) — and make different errors; the
shared encoder is trained on the sum of their episode losses. Costs one encoder, so it exports
and serves at the price of a single model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from metascreen.models.learners.base import (
    EpisodicLearner,
    masked_episode_bce,
    mean_probability_logit,
)
from metascreen.models.learners.gp import gp_head
from metascreen.models.learners.matching import MatchingNetLearner
from metascreen.models.learners.protonet import ProtoNetLearner


class MultiHeadLearner(EpisodicLearner):
    """ProtoNet + matching + GP heads over one encoder; logit of the heads' mean probability."""

    name = "multihead"
    batched_training = True

    def __init__(self, encoder: nn.Module, gp_kernel: str = "global") -> None:
        """Attach the three heads to ``encoder`` (shared, not copied).

        ``gp_kernel="per-task"`` makes the GP head fit its lengthscale on each support set
        (``PerTaskGPLearner``).
        """
        super().__init__(encoder)
        gp = gp_head(encoder, gp_kernel)
        # Heads are learners over the same encoder object; only their own head parameters differ.
        self.heads = nn.ModuleList([ProtoNetLearner(encoder), MatchingNetLearner(encoder), gp])

    def head_logits(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> list[torch.Tensor]:
        """(Q,) logits of every head from shared embeddings."""
        return [h.head(support_emb, support_y, query_emb) for h in self.heads]  # type: ignore[operator]

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) logit of the mean of the heads' probabilities."""
        return mean_probability_logit(self.head_logits(support_emb, support_y, query_emb))

    def batched_head_logits(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> list[torch.Tensor]:
        """(B, Q) logits of every head for B tasks with padded supports."""
        return [h.batched_head(support_emb, support_y, support_mask, query_emb) for h in self.heads]  # type: ignore[operator]

    def batched_head(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> torch.Tensor:
        """(B, Q) ``head`` of B tasks with padded supports (see ``EpisodicLearner.batched_head``)."""
        return mean_probability_logit(
            self.batched_head_logits(support_emb, support_y, support_mask, query_emb)
        )

    def batched_embedded_loss(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
        query_y: torch.Tensor,
        query_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``episode_loss`` (mean of the heads' cross-entropies) averaged over B padded episodes."""
        logits = self.batched_head_logits(support_emb, support_y, support_mask, query_emb)
        return torch.stack([masked_episode_bce(z, query_y, query_mask) for z in logits]).mean()

    def episode_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Mean of the heads' query cross-entropies (each head gets its own gradient signal)."""
        n_support = support_x.shape[0]
        emb = self.embed(torch.cat([support_x, query_x], dim=0))
        logits = self.head_logits(emb[:n_support], support_y, emb[n_support:])
        return torch.stack(
            [F.binary_cross_entropy_with_logits(z.float(), query_y.float()) for z in logits]
        ).mean()
