"""Deep-kernel GP head (in the spirit of DKT / ADKF-IFT): kernel regression on a meta-learned encoder.

Per task, the posterior mean of a GP with an RBF kernel on unit-normalised embeddings is fitted to
the support labels (±1): ``m(q) = k(q, S) (K_SS + σ² I)^{-1} y``. The linear system is solved with
a fixed number of conjugate-gradient steps so the same computation trains (autograd through the
unrolled solver), exports to ONNX (which has no linear-solve operator) and serves.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metascreen.models.learners.base import EpisodicLearner


def conjugate_gradient(a: torch.Tensor, b: torch.Tensor, iters: int) -> torch.Tensor:
    """Solve ``a x = b`` for symmetric positive-definite ``a`` (S, S), ``b`` (S, 1), unrolled."""
    x = torch.zeros_like(b)
    r = b
    p = r
    rs = (r * r).sum()
    for _ in range(iters):
        ap = a @ p  # (S, 1): 2-D matmuls only (1-D ones mistranslated in ONNX export)
        alpha = rs / (p * ap).sum().clamp_min(1e-20)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum()
        p = r + (rs_new / rs.clamp_min(1e-20)) * p
        rs = rs_new
    return x


def batched_conjugate_gradient(a: torch.Tensor, b: torch.Tensor, iters: int) -> torch.Tensor:
    """``conjugate_gradient`` for a batch: ``a`` (B, S, S), ``b`` (B, S, 1), sums per system."""
    x = torch.zeros_like(b)
    r = b
    p = r
    rs = (r * r).sum((1, 2), keepdim=True)
    for _ in range(iters):
        ap = a @ p
        alpha = rs / (p * ap).sum((1, 2), keepdim=True).clamp_min(1e-20)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum((1, 2), keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-20)) * p
        rs = rs_new
    return x


class GPLearner(EpisodicLearner):
    """GP posterior mean on learned features; lengthscale, noise and output scale are meta-learned."""

    name = "gp"

    def __init__(self, encoder: nn.Module, cg_iters: int = 40) -> None:
        """Wrap ``encoder`` with kernel hyper-parameters."""
        super().__init__(encoder)
        self.log_lengthscale = nn.Parameter(torch.tensor(math.log(0.7)))
        self.log_noise = nn.Parameter(torch.tensor(math.log(0.3)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(4.0)))
        self.cg_iters = cg_iters

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """RBF on unit vectors: exp((cos(a, b) − 1) / ℓ²), (n_a, n_b)."""
        return torch.exp((a @ b.t() - 1.0) / self.log_lengthscale.exp() ** 2)

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) scaled posterior mean of the ±1 labels."""
        s = support_emb / support_emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        q = query_emb / query_emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        y = (2.0 * support_y - 1.0).unsqueeze(-1)  # (S, 1)
        k_ss = self.kernel(s, s) + self.log_noise.exp() * torch.eye(
            s.shape[0], dtype=s.dtype, device=s.device
        )
        alpha = conjugate_gradient(k_ss, y, self.cg_iters)  # (S, 1)
        mean = (self.kernel(q, s) @ alpha).squeeze(-1)  # (Q,)
        return self.log_scale.exp() * mean

    def batched_head(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> torch.Tensor:
        """(B, Q) ``head`` of B tasks with padded supports (see ``EpisodicLearner.batched_head``).

        Padded rows get an identity block and a zero target, so they solve to zero weight and the
        valid rows solve exactly the unpadded system.
        """
        s = support_emb / support_emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        q = query_emb / query_emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        m = support_mask.unsqueeze(-1)  # (B, S, 1)
        y = (2.0 * support_y.unsqueeze(-1) - 1.0) * m
        k = torch.exp((s @ s.transpose(1, 2) - 1.0) / self.log_lengthscale.exp() ** 2)
        eye = torch.eye(s.shape[1], dtype=s.dtype, device=s.device)
        k_ss = k * (m @ m.transpose(1, 2)) + eye * (self.log_noise.exp() * m + (1.0 - m))
        alpha = batched_conjugate_gradient(k_ss, y, self.cg_iters)  # (B, S, 1)
        k_qs = torch.exp((q @ s.transpose(1, 2) - 1.0) / self.log_lengthscale.exp() ** 2)
        return self.log_scale.exp() * (k_qs @ alpha).squeeze(-1)
