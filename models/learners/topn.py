"""The top-N recommender: a cold user's few ratings in, a score for every catalogue item out.

``score[j] = scale · Σ_s w(r_s) B[i_s, j]  +  pop · log_pop[j]  +  bias[j]  +  t_u · e_j``

- ``B`` is the item-item matrix fitted in closed form to cold-user episodes
  (``models/features/itemitem.py``); it is a buffer, swapped per cross-fitting fold in training;
- ``w(r)`` is a learned weight per rating value 1..5 (how much a 1-star rating should still pull
  its neighbours up: a rating says "watched" as well as "liked");
- ``pop`` and ``bias`` are a learned popularity prior and per-item correction;
- ``t_u`` is a taste vector, the support's item embeddings weighted by a second learned rating
  weight and divided by √S, and ``e_j`` the learned item embedding (starting near zero).

At initialisation (``w = 1``, ``pop = bias = 0``, ``e ≈ 0``) the model is the closed-form
item-item model alone; the meta-training loop then trains it episodically with a softmax over
the catalogue (multinomial likelihood of the user's held-back liked items), and early stopping
keeps the initial state if training does not help on the selection users.

Inputs are padded batches (``support_mask`` 0 on padding), so one ONNX call scores many users.
"""

from __future__ import annotations

import torch
from torch import nn

N_RATING_LEVELS = 5


def rating_level(r: torch.Tensor) -> torch.Tensor:
    """Index 0..4 of a rating (rounded, clipped to 1..5)."""
    return (torch.round(r).clamp(1.0, float(N_RATING_LEVELS)) - 1.0).long()


class TopNRecommender(nn.Module):
    """Item-item backbone plus learned corrections; ``forward`` scores the whole catalogue."""

    name = "topn"
    batched_training = False
    item_item: torch.Tensor
    log_pop: torch.Tensor

    def __init__(
        self, item_item: torch.Tensor, log_pop: torch.Tensor, dim: int = 32, scale: float = 20.0
    ) -> None:
        """``item_item`` (n, n) and ``log_pop`` (n,) are buffers; ``dim`` the embedding width."""
        super().__init__()
        n = int(item_item.shape[0])
        self.register_buffer("item_item", item_item.float().contiguous())
        self.register_buffer("log_pop", log_pop.float())
        self.rating_weight = nn.Parameter(torch.ones(N_RATING_LEVELS))
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.pop = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(n))
        self.taste_weight = nn.Parameter(torch.ones(N_RATING_LEVELS))
        gen = torch.Generator().manual_seed(0)
        self.item_emb = nn.Parameter(torch.randn(n, dim, generator=gen) * 1e-3)

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return int(self.item_item.shape[0])

    def forward(
        self, support_items: torch.Tensor, support_ratings: torch.Tensor, support_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, n_items) scores. Shapes: ``support_*`` (B, S); padded rows have mask 0."""
        return self.forward_rows(
            self.item_item[support_items], support_items, support_ratings, support_mask
        )

    def forward_rows(
        self,
        support_rows: torch.Tensor,
        support_items: torch.Tensor,
        support_ratings: torch.Tensor,
        support_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``forward`` with the support's item-item rows given (B, S, n): training passes rows
        of the user's cross-fitting fold."""
        level = rating_level(support_ratings)
        w = self.rating_weight[level] * support_mask  # (B, S)
        backbone = torch.einsum("bs,bsn->bn", w, support_rows)
        n_s = support_mask.sum(1, keepdim=True).clamp_min(1.0)
        tw = self.taste_weight[level] * support_mask
        taste = torch.einsum("bs,bsd->bd", tw, self.item_emb[support_items]) / n_s.sqrt()
        return self.scale * backbone + self.pop * self.log_pop + self.bias + taste @ self.item_emb.T


def catalogue_softmax_loss(
    scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor
) -> torch.Tensor:
    """Mean over users of −(1/|T_u|) Σ_{j ∈ T_u} log softmax(scores_u)_j over the catalogue.

    ``targets`` (B, n) is 1 on each user's held-back liked items; ``excluded`` (B, n) is 1 on
    their support items, which are out of the softmax (they are never recommended). Users
    without a target are skipped.
    """
    logits = scores.masked_fill(excluded > 0, float("-inf"))
    logp = torch.log_softmax(logits, dim=1).masked_fill(excluded > 0, 0.0)
    n_t = targets.sum(1)
    keep = n_t > 0
    per_user = -(logp * targets).sum(1)[keep] / n_t[keep]
    return per_user.mean() if bool(keep.any()) else scores.sum() * 0.0
