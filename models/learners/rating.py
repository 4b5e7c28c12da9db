"""Meta-learned rating predictor: ridge fold-in on MF item factors plus an attentive residual.

For one user (a task), ``forward(support_x, support_y, query_x)`` with item rows laid out as in
``models.rec_features`` (``[q_i | b_i | log-count | known | side]``):

1. **Fold-in.** ``(p_u, b_u)`` = ridge regression of the support ratings minus ``μ + b_i`` on
   ``q_i``, solved by unrolled conjugate gradients (ONNX has no linear solve); the ridge weights
   are meta-learned. ``base = μ + b_u + b_i + p_u · q_i`` is the classical MF fold-in prediction.
2. **Attentive residual.** Every query item attends over the user's support tokens (item row,
   rating, fold-in residual) with multi-head dot-product attention; an MLP over the query item,
   the attended context and the user's support statistics predicts a correction to ``base``.
   Its last layer starts at zero, so training starts from the fold-in baseline.

3. **Staircase.** The benchmark scores one number per item with MAE (best answered by a
   median, which for integer ratings sits near an integer) *and* ranks items by it (best answered
   by the mean). A strictly increasing "staircase" ``f`` is applied to the mean-like prediction:
   within ``t`` of an integer it moves the prediction to that integer (keeping a slope ``eps``
   so ties never appear), elsewhere it stretches linearly. Being strictly monotone, it leaves
   every user's ranking — hence nDCG — unchanged while lowering MAE; ``t`` is fitted after
   meta-training on the early-stopping users (``t = 0`` is the identity).

The output is the predicted rating, clamped to [1, 5]. Trained episodically on training users
(MeLU's split shape); the loss is on the prediction before the staircase.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from metascreen.models.learners.base import EpisodicLearner
from metascreen.models.learners.gp import conjugate_gradient

N_STATS = 7


def staircase(p: torch.Tensor, t: torch.Tensor, eps: float = 0.02) -> torch.Tensor:
    """Strictly increasing map pulling values within ``t`` (< 0.5) of an integer onto it."""
    r = torch.round(p)
    x = p - r  # (…,) in [-0.5, 0.5]
    ax = x.abs()
    inner = eps * x
    slope = (0.5 - eps * t) / (0.5 - t)
    outer = torch.sign(x) * (eps * t + slope * (ax - t))
    return r + torch.where(ax < t, inner, outer)


def _mlp(i: int, h: int, o: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Dropout(dropout), nn.Linear(h, o))


class AttentiveRatingLearner(EpisodicLearner):
    """Fold-in MF baseline plus a support-attention residual; output (Q,) ratings.

    Shapes:
        support_x: (S, D), support_y: (S,) ratings in [1, 5], query_x: (Q, D) → ratings (Q,)
    """

    name = "attentive-rating"
    cache_embeddings = False
    mu: torch.Tensor
    stair_t: torch.Tensor
    residual_gate: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        factor_dim: int,
        mu: float,
        hidden: int = 96,
        heads: int = 4,
        dropout: float = 0.1,
        reg: float = 10.0,
        reg_bias: float = 5.0,
        loss: Literal["l1", "mse", "huber"] = "l1",
        residual: bool = True,
    ) -> None:
        """Build the heads; ``factor_dim`` = d, the MF factor size at the start of each row."""
        super().__init__(nn.Identity())
        self.d = factor_dim
        self.heads = heads
        self.hidden = hidden
        self.loss = loss
        self.residual = residual
        self.register_buffer("mu", torch.tensor(float(mu)))
        self.register_buffer("stair_t", torch.tensor(0.0))
        # 1 = use the attentive residual; set to 0 after training when the fold-in alone
        # validates better (model selection on the early-stopping users).
        self.register_buffer("residual_gate", torch.tensor(1.0))
        self.log_reg = nn.Parameter(torch.tensor(math.log(reg)))
        self.log_reg_bias = nn.Parameter(torch.tensor(math.log(reg_bias)))
        self.s_enc = _mlp(in_dim + 3 + 5, hidden, hidden, dropout)
        self.q_enc = _mlp(in_dim + 2 + N_STATS, hidden, hidden, dropout)
        self.w_q = nn.Linear(hidden, hidden)
        self.w_k = nn.Linear(hidden, hidden)
        self.w_v = nn.Linear(hidden, hidden)
        self.out = _mlp(2 * hidden + N_STATS + 1, hidden, 1, dropout)
        last = self.out[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def fold_in(
        self, support_x: torch.Tensor, support_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ridge ``(p_u, b_u)``: (d + 1, 1) weights on ``[q_i, 1]``, by unrolled CG."""
        d = self.d
        xa = torch.cat([support_x[:, :d], torch.ones_like(support_x[:, :1])], dim=1)  # (S, d+1)
        t = (support_y - self.mu - support_x[:, d]).unsqueeze(-1)  # (S, 1)
        reg = torch.cat([self.log_reg.exp().expand(d), self.log_reg_bias.exp().reshape(1)])
        a = xa.t() @ xa + torch.diag(reg)
        w = conjugate_gradient(a, xa.t() @ t, d + 5)  # exact after d + 1 steps in exact arithmetic
        return xa, w

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) predicted ratings of the query items (staircase, then clamped to [1, 5])."""
        raw = self.raw_prediction(support_x, support_y, query_x)
        return staircase(raw, self.stair_t).clamp(1.0, 5.0)

    def raw_prediction(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) unclamped predictions (the training loss sees these, so gradients never vanish)."""
        d = self.d
        xa, w = self.fold_in(support_x, support_y)
        qa = torch.cat([query_x[:, :d], torch.ones_like(query_x[:, :1])], dim=1)
        base_s = self.mu + support_x[:, d] + (xa @ w).squeeze(-1)  # (S,)
        base_q = self.mu + query_x[:, d] + (qa @ w).squeeze(-1)  # (Q,)
        if not self.residual:
            return base_q
        n_s = support_y.shape[0]
        dev = support_y - self.mu
        res_s = support_y - base_s
        stats = torch.stack(
            [
                torch.log(torch.ones_like(support_y[0]) * n_s) / 5.0,
                dev.mean(),
                (dev - dev.mean()).pow(2).mean().sqrt(),
                (dev - support_x[:, d]).mean(),
                res_s.abs().mean(),
                w[d, 0],
                w[:d, 0].norm(),
            ]
        )  # (N_STATS,)
        onehot = F.one_hot(support_y.round().clamp(1, 5).long() - 1, 5).to(support_x.dtype)
        s_tok = self.s_enc(
            torch.cat(
                [
                    support_x,
                    dev.unsqueeze(-1),
                    res_s.unsqueeze(-1),
                    (dev - support_x[:, d]).unsqueeze(-1),
                    onehot,
                ],
                dim=1,
            )
        )  # (S, H)
        n_q = query_x.shape[0]
        q_in = torch.cat(
            [
                query_x,
                (base_q - self.mu).unsqueeze(-1),
                (qa[:, :d] * w[:d, 0]).sum(-1, keepdim=True),
                stats.unsqueeze(0).expand(n_q, N_STATS),
            ],
            dim=1,
        )
        q_tok = self.q_enc(q_in)  # (Q, H)
        hd = self.hidden // self.heads
        qh = self.w_q(q_tok).reshape(n_q, self.heads, hd).transpose(0, 1)  # (h, Q, hd)
        kh = self.w_k(s_tok).reshape(n_s, self.heads, hd).transpose(0, 1)  # (h, S, hd)
        vh = self.w_v(s_tok).reshape(n_s, self.heads, hd).transpose(0, 1)  # (h, S, hd)
        att = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(hd), dim=-1)  # (h, Q, S)
        ctx = (att @ vh).transpose(0, 1).reshape(n_q, self.hidden)  # (Q, H)
        delta = self.out(
            torch.cat(
                [
                    q_tok,
                    ctx,
                    stats.unsqueeze(0).expand(n_q, N_STATS),
                    (base_q - self.mu).unsqueeze(-1),
                ],
                dim=1,
            )
        ).squeeze(-1)
        return base_q + self.residual_gate * delta

    def episode_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
    ) -> torch.Tensor:
        """Absolute (default), squared or Huber error of the query ratings."""
        pred = self.raw_prediction(support_x, support_y, query_x).float()
        if self.loss == "mse":
            return F.mse_loss(pred, query_y.float())
        if self.loss == "huber":
            return F.smooth_l1_loss(pred, query_y.float(), beta=0.5)
        return F.l1_loss(pred, query_y.float())
