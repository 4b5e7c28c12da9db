"""The adaptive-screening policy network: candidates attend over the (embedding, label) history.

Permutation-equivariant in the candidates and permutation-invariant in the history: each
candidate is projected, cross-attends over the history tokens (projected embedding + label
embedding, plus a learned token standing for "nothing known yet" that is never masked, so an
empty history is well defined), sees the pool's mean and the spent budget fraction, and gets one
logit. A value head reads the pooled candidates. Shared by both domains: it only sees embeddings.
The training loop and losses live in ``metascreen.models.training.policy``; the ONNX export in
``metascreen.models.training.export``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F

from metascreen.domains.errors import ConfigError
from metascreen.models.learners.registry import build_head

N_SIM = 9  # similarity features per candidate (see ScreeningPolicy.similarity_features)
N_HEAD = 3  # predictor-head features per candidate (see ScreeningPolicy.head_features)
N_PRIOR = 2  # activity-prior features per candidate (see ScreeningPolicy.prior_features)
NEG = -1e4  # logit of a candidate that cannot be picked (finite: exports and softmaxes cleanly)


class PolicyConfig(BaseModel):
    """Architecture of ``ScreeningPolicy``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1, le=8)
    use_history: bool = Field(True, description="False: the ablation without history attention")
    predictor_head: Literal["protonet", "matching", "gp", "multihead"] | None = Field(
        None,
        description="a frozen few-shot head (the predictor's, on the same embeddings) whose "
        "adapted logit on the history is a candidate feature",
    )
    prior: bool = Field(
        False,
        description="a frozen task-agnostic activity prior (a logistic model on the embedding, "
        "set by set_prior) whose logit is a candidate feature",
    )
    anchor: bool = Field(
        False,
        description="the output is greedy-prior's score (the head's adapted logit plus the prior's "
        "logit; the prior alone until both classes are known) plus a learned correction that "
        "starts at zero; needs predictor_head, prior and use_history",
    )

    @model_validator(mode="after")
    def _anchor_needs_its_parts(self) -> PolicyConfig:
        if self.anchor and (self.predictor_head is None or not self.prior or not self.use_history):
            raise ValueError(
                "anchor needs the predictor head, an activity prior and the history "
                f"(predictor_head={self.predictor_head!r}, prior={self.prior}, "
                f"use_history={self.use_history})"
            )
        return self


def _standardise_over_pool(z: torch.Tensor, cand_mask: torch.Tensor) -> torch.Tensor:
    """(B, N) scores centred and scaled by their mean and std over the available candidates."""
    cm = cand_mask.to(z.dtype)
    n = cm.sum(1, keepdim=True).clamp_min(1.0)
    mean = (z * cm).sum(1, keepdim=True) / n
    std = (((z - mean) ** 2 * cm).sum(1, keepdim=True) / n).sqrt()
    return (z - mean) / (std + 1e-3)


class _CrossBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, h: torch.Tensor, kv: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        m = kv.shape[1]
        hd = d // self.heads
        q = self.q(self.norm_q(h)).reshape(b, n, self.heads, hd).transpose(1, 2)
        k, v = self.kv(self.norm_kv(kv)).reshape(b, m, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        mask = key_ok[:, None, None, :]  # (B, 1, 1, M) bool
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.o(att.transpose(1, 2).reshape(b, n, d))
        return h + self.ff(self.norm_ff(h))


class ScreeningPolicy(nn.Module):
    """Scores candidates given the history.

    Shapes:
        candidates (B, N, D), candidate_mask (B, N) 1 = may be picked,
        history (B, H, D), history_labels (B, H) 0/1, history_mask (B, H) 1 = real entry,
        t_frac (B,) spent budget fraction → logits (B, N) (``NEG`` where masked), value (B,)
    """

    prior_w: torch.Tensor  # buffers, only with PolicyConfig.prior
    prior_b: torch.Tensor

    def __init__(self, in_dim: int, cfg: PolicyConfig | None = None) -> None:
        """Build the projections, attention blocks and heads."""
        super().__init__()
        cfg = cfg or PolicyConfig()
        if cfg.d_model % cfg.heads:
            raise ConfigError(f"d_model {cfg.d_model} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.in_dim = in_dim
        d = cfg.d_model
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, d), nn.GELU(), nn.Linear(d, d)
        )
        self.label = nn.Embedding(2, d)
        self.empty = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.context = nn.Linear(d + 1, d)
        self.blocks = nn.ModuleList([_CrossBlock(d, cfg.heads) for _ in range(cfg.layers)])
        self.head: nn.Module | None = None
        if cfg.predictor_head is not None:
            self.head = build_head(cfg.predictor_head).requires_grad_(False)
        if cfg.prior:
            self.register_buffer("prior_w", torch.zeros(in_dim))
            self.register_buffer("prior_b", torch.zeros(()))
        n_feat = N_SIM + (N_HEAD if self.head is not None else 0)
        n_feat += N_PRIOR if cfg.prior else 0
        self.sim_in = nn.Sequential(nn.Linear(n_feat, d), nn.GELU(), nn.Linear(d, d))
        self.sim_out = nn.Linear(n_feat, 1)
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.value = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        if cfg.anchor:  # the learned correction starts at zero: the policy starts as greedy-prior
            for layer in (self.out[-1], self.sim_out):
                assert isinstance(layer, nn.Linear)
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @property
    def keeps_raw(self) -> bool:
        """Whether tokens carry the raw embedding (for the predictor head or the prior)."""
        return self.head is not None or self.cfg.prior

    def set_prior(self, weights: torch.Tensor, bias: float) -> None:
        """Fix the activity prior: ``prior(e) = e @ weights + bias`` (frozen, a buffer)."""
        if not self.cfg.prior:
            raise ConfigError("this policy was built without a prior (PolicyConfig.prior)")
        w = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if w.numel() != self.in_dim:
            raise ConfigError(f"{w.numel()} prior weights for {self.in_dim}-d embeddings")
        self.prior_w.copy_(w)
        self.prior_b.fill_(float(bias))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) embeddings → tokens: learned projection ‖ L2-normalised input (‖ the input
        itself when there is a predictor head or a prior, which work on raw embeddings).

        Candidates are projected once per episode; history tokens are gathered from them.
        """
        parts = [self.proj(x), F.normalize(x.float(), dim=-1).to(x.dtype)]
        if self.keeps_raw:
            parts.append(x)
        return torch.cat(parts, -1)

    def prior_features(self, cand_raw: torch.Tensor, cand_mask: torch.Tensor) -> torch.Tensor:
        """(B, N, N_PRIOR): the activity prior's logit, and the same standardised over the
        available candidates — what ``greedy-prior`` starts from, in-graph."""
        p = cand_raw.float() @ self.prior_w + self.prior_b  # (B, N)
        return torch.stack([p, _standardise_over_pool(p, cand_mask)], -1)

    def head_features(
        self,
        cand_raw: torch.Tensor,
        cand_mask: torch.Tensor,
        hist_raw: torch.Tensor,
        hist_labels: torch.Tensor,
        hist_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, N, N_HEAD): the predictor head's logit adapted on the history, the same logit
        standardised over the available candidates, and whether both classes are known (the
        first two are 0 until they are) — what the ``greedy`` baseline ranks by, in-graph."""
        assert self.head is not None
        z = self.head.batched_head(  # type: ignore[operator]
            hist_raw.float(), hist_labels.float(), hist_mask.float(), cand_raw.float()
        )
        known = hist_mask > 0.5
        has_pos = (known & (hist_labels > 0.5)).any(1)
        has_neg = (known & (hist_labels <= 0.5)).any(1)
        both = (has_pos & has_neg).to(z.dtype).unsqueeze(1)  # (B, 1)
        zs = _standardise_over_pool(z, cand_mask)
        return torch.stack([z * both, zs * both, both.expand_as(z)], -1)

    def similarity_features(
        self,
        cand_n: torch.Tensor,
        hist_n: torch.Tensor,
        hist_labels: torch.Tensor,
        hist_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, N, N_SIM) cosine-similarity statistics of each candidate to the known actives/inactives.

        Max and mean similarity to each class, whether the class has been seen, log counts and the
        max-similarity margin: the inductive bias of kNN/prototype few-shot learners, in-graph.
        """
        sim = cand_n @ hist_n.transpose(1, 2)  # (B, N, H)
        seen = hist_mask > 0.5
        out = []
        for sel in (seen & (hist_labels > 0.5), seen & (hist_labels <= 0.5)):
            w = sel.unsqueeze(1).to(sim.dtype)  # (B, 1, H)
            cnt = w.sum(-1)  # (B, 1)
            has = (cnt > 0).to(sim.dtype)
            mx = torch.where(sel.unsqueeze(1), sim, torch.full_like(sim, -2.0)).amax(-1) * has
            mean = (sim * w).sum(-1) / cnt.clamp_min(1.0)
            out += [mx, mean, has.expand_as(mx), torch.log1p(cnt).expand_as(mx)]
        out.append(out[0] - out[4])
        return torch.stack(out, -1)

    def score(
        self,
        cand: torch.Tensor,
        cand_mask: torch.Tensor,
        hist: torch.Tensor,
        hist_labels: torch.Tensor,
        hist_mask: torch.Tensor,
        t_frac: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` on ``project``-ed candidate and history tokens."""
        b = cand.shape[0]
        d = self.cfg.d_model
        e = d + self.in_dim
        cand, cand_n, cand_raw = cand[..., :d], cand[..., d:e], cand[..., e:]
        hist, hist_n, hist_raw = hist[..., :d], hist[..., d:e], hist[..., e:]
        cm = cand_mask.to(cand.dtype).unsqueeze(-1)
        t = t_frac.reshape(b, 1).to(cand.dtype)
        pool_mean = (cand * cm).sum(1) / cm.sum(1).clamp_min(1.0)  # (B, d)
        ctx = self.context(torch.cat([pool_mean, t], -1))
        h = cand + ctx.unsqueeze(1)
        base: torch.Tensor | None = None  # greedy-prior's score, with PolicyConfig.anchor
        if self.cfg.use_history:
            feats = self.similarity_features(cand_n, hist_n, hist_labels, hist_mask)
            if self.head is not None:
                head = self.head_features(cand_raw, cand_mask, hist_raw, hist_labels, hist_mask)
                feats = torch.cat([feats, head.to(feats.dtype)], -1)
                base = head[..., 0] if self.cfg.anchor else None  # 0 until both classes known
            feats = feats.to(cand.dtype)
            tokens = hist + self.label(hist_labels.long().clamp(0, 1))
            kv = torch.cat([self.empty.expand(b, 1, -1).to(tokens.dtype), tokens], 1)
            ok = torch.cat(
                [torch.ones(b, 1, dtype=torch.bool, device=hist.device), hist_mask > 0.5], 1
            )
        else:
            n_feat = self.sim_out.in_features - (N_PRIOR if self.cfg.prior else 0)
            feats = torch.zeros(*cand.shape[:2], n_feat, dtype=cand.dtype, device=cand.device)
            kv = self.empty.expand(b, 1, -1).to(cand.dtype)
            ok = torch.ones(b, 1, dtype=torch.bool, device=cand.device)
        if self.cfg.prior:
            prior = self.prior_features(cand_raw, cand_mask)
            feats = torch.cat([feats, prior.to(feats.dtype)], -1)
            if base is not None:
                base = base + prior[..., 0]
        h = h + self.sim_in(feats)
        for block in self.blocks:
            h = block(h, kv, ok)
        logits = self.out(h).squeeze(-1) + self.sim_out(feats).squeeze(-1)
        if base is not None:
            logits = logits + base.to(logits.dtype)
        logits = torch.where(cand_mask > 0.5, logits, torch.full_like(logits, NEG))
        pooled = (h * cm).sum(1) / cm.sum(1).clamp_min(1.0)
        return logits, self.value(pooled).squeeze(-1)

    def forward(
        self,
        candidates: torch.Tensor,
        candidate_mask: torch.Tensor,
        history: torch.Tensor,
        history_labels: torch.Tensor,
        history_mask: torch.Tensor,
        t_frac: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) logits and (B,) values; see the class docstring for shapes."""
        return self.score(
            self.project(candidates),
            candidate_mask,
            self.project(history),
            history_labels,
            history_mask,
            t_frac,
        )
