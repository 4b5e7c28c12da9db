"""The learner interface: an encoder plus an episodic head, trained by ``models.train``.

Every learner is an ``nn.Module`` whose ``forward(support_x, support_y, query_x)`` returns one
logit per query row (higher = more likely active). Adaptation to a support set happens inside
``forward`` (prototypes, attention, or a few closed-form gradient steps on a linear head), so the
same graph is what ONNX exports and what onnxruntime serves: no adaptation code is duplicated
between training and scoring.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F


class Learner(Protocol):
    """What the training loop and evaluation need from a learner."""

    name: str

    def __call__(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """(n_query,) logits for ``query_x`` after adapting to (support_x, support_y)."""
        ...

    def episode_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar meta-training loss of one episode."""
        ...


class EpisodicLearner(nn.Module):
    """Encoder + head. Subclasses implement ``head(support_emb, support_y, query_emb)``.

    Shapes:
        support_x: (S, D), support_y: (S,) in {0, 1}, query_x: (Q, D) → logits (Q,)
    """

    name = "episodic"
    cache_embeddings = True
    """forward(s, y, q) == head(embed(s), y, embed(q)): evaluation may embed each task once."""
    batched_training = False
    """``batched_episode_loss`` is the mean of ``episode_loss`` over a batch of padded episodes:
    the training loop runs a step's episodes through the encoder and heads in one call."""

    def __init__(self, encoder: nn.Module) -> None:
        """Wrap ``encoder``."""
        super().__init__()
        self.encoder = encoder

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) logits from embeddings; implemented by each learner."""
        raise NotImplementedError

    def batched_head(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> torch.Tensor:
        """(B, Q) logits for B tasks at once; padded support rows have ``support_mask`` 0.

        Shapes: support_emb (B, S, E), support_y and support_mask (B, S), query_emb (B, Q, E).
        Row ``b`` equals ``head(support_emb[b][keep], support_y[b][keep], query_emb[b])`` with
        ``keep = support_mask[b] > 0`` — what the screening policy feeds itself with in-graph.
        """
        raise NotImplementedError(f"{self.name} has no batched head")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(n, E) embeddings."""
        return self.encoder(x)

    def embed_episodes(
        self, support_x: torch.Tensor, query_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (B, S, E) and (B, Q, E) of B episodes' rows, in one encoder call."""
        b, s, d = support_x.shape
        q = query_x.shape[1]
        emb = self.embed(torch.cat([support_x.reshape(b * s, d), query_x.reshape(b * q, d)]))
        return emb[: b * s].reshape(b, s, -1), emb[b * s :].reshape(b, q, -1)

    def batched_episode_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        query_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over B padded episodes of ``episode_loss`` (for ``batched_training`` learners).

        Shapes: support_x (B, S, D), query_x (B, Q, D); labels and masks (B, S) and (B, Q), mask
        0 on padded rows.
        """
        se, qe = self.embed_episodes(support_x, query_x)
        return self.batched_embedded_loss(se, support_y, support_mask, qe, query_y, query_mask)

    def batched_embedded_loss(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
        query_y: torch.Tensor,
        query_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``batched_episode_loss`` from the episodes' embeddings (``embed_episodes``), so that
        the training loop can add losses of its own on the same embeddings."""
        return masked_episode_bce(
            self.batched_head(support_emb, support_y, support_mask, query_emb), query_y, query_mask
        )

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """Adapt to the support set and return (Q,) query logits."""
        n_support = support_x.shape[0]
        emb = self.embed(torch.cat([support_x, query_x], dim=0))
        return self.head(emb[:n_support], support_y, emb[n_support:])

    def episode_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Binary cross-entropy of the query logits."""
        logits = self(support_x, support_y, query_x)
        return F.binary_cross_entropy_with_logits(logits.float(), query_y.float())


def masked_episode_bce(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over episodes of each episode's mean query cross-entropy; (B, Q) inputs, mask 0 on
    padded query rows."""
    per_row = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return ((per_row * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()


def class_prototypes(emb: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding of the inactive and of the active support rows: two (E,) tensors."""
    w_pos = y.unsqueeze(1)
    w_neg = 1.0 - w_pos
    pos = (emb * w_pos).sum(0) / w_pos.sum().clamp_min(1.0)
    neg = (emb * w_neg).sum(0) / w_neg.sum().clamp_min(1.0)
    return neg, pos


def masked_class_prototypes(
    emb: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched ``class_prototypes``: emb (B, S, E), y and mask (B, S) → two (B, E) tensors."""
    w_pos = (y * mask).unsqueeze(-1)
    w_neg = ((1.0 - y) * mask).unsqueeze(-1)
    pos = (emb * w_pos).sum(1) / w_pos.sum(1).clamp_min(1.0)
    neg = (emb * w_neg).sum(1) / w_neg.sum(1).clamp_min(1.0)
    return neg, pos


def linear_head_steps(
    support_emb: torch.Tensor,
    support_y: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    lrs: torch.Tensor,
    l2: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient steps of L2-regularised logistic regression on a linear head, in closed form.

    The gradient of the mean log-loss is written out (``X^T (sigmoid(Xw+b) - y) / n``) rather than
    taken with autograd, so the unrolled loop exports to ONNX and stays differentiable for the
    outer (meta) update. ``lrs`` holds one learning rate per step.
    """
    n = support_emb.shape[0]
    for i in range(lrs.shape[0]):
        # Written with broadcasting, not 1-D matmuls, which the ONNX translation got wrong.
        err = torch.sigmoid((support_emb * w).sum(-1) + b) - support_y  # (S,)
        grad_w = (support_emb * err.unsqueeze(-1)).sum(0) / n + l2 * w
        grad_b = err.mean()
        w = w - lrs[i] * grad_w
        b = b - lrs[i] * grad_b
    return w, b


def mean_probability_logit(logits: list[torch.Tensor]) -> torch.Tensor:
    """Logit of the mean of ``sigmoid(logits)`` — how ensembles and multi-head models combine."""
    probs = torch.stack([torch.sigmoid(z) for z in logits]).mean(0).clamp(1e-6, 1 - 1e-6)
    return torch.log(probs) - torch.log1p(-probs)
