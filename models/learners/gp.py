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
    batched_training = True

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

    @staticmethod
    def _prepare(
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit embeddings ``s`` (B, S, D), ``q`` (B, Q, D), masked ±1 labels ``y`` and mask ``m``
        (B, S, 1)."""
        s = support_emb / support_emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        q = query_emb / query_emb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        m = support_mask.to(s.dtype).unsqueeze(-1)
        y = (2.0 * support_y.to(s.dtype).unsqueeze(-1) - 1.0) * m
        return s, q, y, m

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
        s, q, y, m = self._prepare(support_emb, support_y, support_mask, query_emb)
        k = torch.exp((s @ s.transpose(1, 2) - 1.0) / self.log_lengthscale.exp() ** 2)
        eye = torch.eye(s.shape[1], dtype=s.dtype, device=s.device)
        k_ss = k * (m @ m.transpose(1, 2)) + eye * (self.log_noise.exp() * m + (1.0 - m))
        alpha = batched_conjugate_gradient(k_ss, y, self.cg_iters)  # (B, S, 1)
        k_qs = torch.exp((q @ s.transpose(1, 2) - 1.0) / self.log_lengthscale.exp() ** 2)
        return self.log_scale.exp() * (k_qs @ alpha).squeeze(-1)


def batched_cg_inverse(a: torch.Tensor, iters: int) -> torch.Tensor:
    """``a⁻¹`` for a batch of SPD matrices ``a`` (..., S, S): CG on every column of I, unrolled."""
    n = a.shape[-1]
    b = torch.eye(n, dtype=a.dtype, device=a.device).expand_as(a)
    x = torch.zeros_like(a)
    r = b
    p = r
    rs = (r * r).sum(-2, keepdim=True)  # (..., 1, S): one CG per column
    for _ in range(iters):
        ap = a @ p
        alpha = rs / (p * ap).sum(-2, keepdim=True).clamp_min(1e-20)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(-2, keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-20)) * p
        rs = rs_new
    return x


class PerTaskGPLearner(GPLearner):
    """Deep-kernel GP whose kernel lengthscale is fitted on each task's support set.

    ADKF-IFT (Chen et al., ICLR 2023) fits the kernel hyper-parameters per task and meta-learns
    the feature extractor through that fit. Here the per-task fit is a soft selection over a grid
    of lengthscales ``ℓ · exp(g)`` around the meta-learned ``ℓ``: each grid point is scored by the
    support set's leave-one-out log predictive probability (closed form from ``K⁻¹``, Rasmussen &
    Williams §5.4.2), and the prediction is the posterior mean averaged with softmax weights of
    those scores. Every step is a matmul, an exp or a softmax, so the fit is differentiated
    exactly (no implicit-function hypergradient needed) and exports to one ONNX graph.
    """

    name = "gp-per-task"

    def __init__(
        self,
        encoder: nn.Module,
        cg_iters: int = 40,
        grid: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0),
    ) -> None:
        """Wrap ``encoder``; ``grid`` holds the log-multipliers of the lengthscale tried per task."""
        super().__init__(encoder, cg_iters)
        self.register_buffer("log_grid", torch.tensor(grid, dtype=torch.float32))
        self.log_temperature = nn.Parameter(torch.tensor(0.0))

    def _loo_fit(
        self, s: torch.Tensor, y: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-task lengthscale weights (B, G), weights α (B, G, S, 1) and 1/ℓ² (1, G, 1, 1).

        ``s`` (B, S, D) unit embeddings, ``y`` (B, S, 1) masked ±1 labels, ``m`` (B, S, 1)
        support mask (padded rows get an identity block and drop out of the fit).
        """
        inv_l2 = torch.exp(-2.0 * (self.log_lengthscale + self.log_grid)).view(1, -1, 1, 1)
        cos_ss = (s @ s.transpose(1, 2)).unsqueeze(1)  # (B, 1, S, S)
        mm = (m @ m.transpose(1, 2)).unsqueeze(1)
        eye = torch.eye(s.shape[1], dtype=s.dtype, device=s.device)
        diag = (self.log_noise.exp() * m + (1.0 - m)).unsqueeze(1)  # (B, 1, S, 1)
        k_ss = torch.exp((cos_ss - 1.0) * inv_l2) * mm + eye * diag  # (B, G, S, S)
        k_inv = batched_cg_inverse(k_ss, self.cg_iters)
        alpha = k_inv @ y.unsqueeze(1)  # (B, G, S, 1)
        a_ii = (k_inv * eye).sum(-1, keepdim=True).clamp_min(1e-6)  # (B, G, S, 1)
        # log N(y_i | μ_-i, σ²_-i) up to a constant: ½ log [K⁻¹]_ii − α_i² / (2 [K⁻¹]_ii)
        loo = ((0.5 * torch.log(a_ii) - alpha * alpha / (2.0 * a_ii)) * m.unsqueeze(1)).sum((2, 3))
        n = m.sum((1, 2)).clamp_min(1.0).unsqueeze(-1)  # (B, 1)
        w = torch.softmax(loo / n * self.log_temperature.exp() * 10.0, dim=1)  # (B, G)
        return w, alpha * m.unsqueeze(1), inv_l2

    def lengthscale_weights(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, support_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, G) weight of each grid lengthscale on each task's support set."""
        s, _, y, m = self._prepare(support_emb, support_y, support_mask, support_emb)
        return self._loo_fit(s, y, m)[0]

    def head(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) lengthscale-averaged posterior mean of the ±1 labels for one task."""
        mask = torch.ones_like(support_y, dtype=support_emb.dtype)
        return self.batched_head(
            support_emb.unsqueeze(0),
            support_y.unsqueeze(0),
            mask.unsqueeze(0),
            query_emb.unsqueeze(0),
        ).squeeze(0)

    def batched_head(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> torch.Tensor:
        """(B, Q) ``head`` of B tasks with padded supports (see ``EpisodicLearner.batched_head``)."""
        s, q, y, m = self._prepare(support_emb, support_y, support_mask, query_emb)
        w, alpha, inv_l2 = self._loo_fit(s, y, m)
        k_qs = torch.exp(((q @ s.transpose(1, 2)).unsqueeze(1) - 1.0) * inv_l2)  # (B, G, Q, S)
        mean = (k_qs @ alpha).squeeze(-1)  # (B, G, Q)
        return self.log_scale.exp() * (w.unsqueeze(-1) * mean).sum(1)


def gp_head(encoder: nn.Module, gp_kernel: str = "global") -> GPLearner:
    """The GP learner for ``gp_kernel``: ``global`` (``GPLearner``) or ``per-task``."""
    return PerTaskGPLearner(encoder) if gp_kernel == "per-task" else GPLearner(encoder)
