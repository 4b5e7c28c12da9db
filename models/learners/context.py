"""An episode-context stage before the multihead heads, after MHNfs (Schimunek et al., ICLR 2023).

MHNfs enriches each molecule's embedding with what a modern Hopfield layer retrieves from a large
set of reference molecules, then lets support and query exchange information by cross-attention
before a similarity head. This stage does both, in a form that stays small and exports to one
ONNX graph:

1. **Hopfield retrieval** from ``memory`` learned stored patterns (``x + W_o softmax(β q Kᵀ) V``,
   q a projection of the layer-normed embedding; the patterns are trained end to end, the
   Hopfield layer with learned patterns of Ramsauer et al., 2021) — or, with ``refs`` > 0, from
   the shared encoder's embeddings of ``refs`` fixed training molecules, as MHNfs retrieves from
   its reference set (their features are a buffer set by ``set_references``, so they travel in the
   weights and the exported graph, and are re-encoded by the current encoder at every call).
   Every molecule — support or query — is enriched independently.
2. **Cross-attention to the labelled support set**: every row (support and query) attends over the
   support rows, whose keys and values carry a learned active/inactive label embedding. Queries
   never attend to other queries, so a query's score does not depend on which other molecules are
   scored with it (a library scores the same in any chunking).

Both residual branches start at zero (zero-initialised output projections), so training starts
from the plain ``multihead`` model and learns how much context to use. The heads (ProtoNet,
matching, GP) then run on the adapted embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metascreen.models.learners.multihead import MultiHeadLearner


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class EpisodeContext(nn.Module):
    """Hopfield retrieval from learned patterns, then cross-attention to the labelled support.

    Shapes (batched; B tasks, padded supports have ``support_mask`` 0):
        support_emb (B, S, E), support_y and support_mask (B, S), query_emb (B, Q, E)
        → adapted (B, S, E) and (B, Q, E)
    """

    def __init__(
        self, dim: int, memory: int = 256, attn_dim: int = 64, from_refs: bool = False
    ) -> None:
        """Patterns (or reference projections) and projections for embeddings of size ``dim``."""
        super().__init__()
        self.attn_dim = attn_dim
        self.norm_hop = nn.LayerNorm(dim)
        self.hop_q = nn.Linear(dim, attn_dim, bias=False)
        if from_refs:
            self.norm_ref = nn.LayerNorm(dim)
            self.ref_k = nn.Linear(dim, attn_dim, bias=False)
            self.ref_v = nn.Linear(dim, attn_dim, bias=False)
        else:
            self.patterns_k = nn.Parameter(torch.randn(memory, attn_dim) / math.sqrt(attn_dim))
            self.patterns_v = nn.Parameter(torch.randn(memory, attn_dim) / math.sqrt(attn_dim))
        self.from_refs = from_refs
        self.log_beta = nn.Parameter(torch.zeros(()))
        self.hop_out = _zero_linear(attn_dim, dim)
        self.norm_x = nn.LayerNorm(dim)
        self.norm_s = nn.LayerNorm(dim)
        self.att_q = nn.Linear(dim, attn_dim, bias=False)
        self.att_k = nn.Linear(dim, attn_dim, bias=False)
        self.att_v = nn.Linear(dim, attn_dim, bias=False)
        self.label_k = nn.Parameter(torch.zeros(2, attn_dim))
        self.label_v = nn.Parameter(torch.zeros(2, attn_dim))
        self.att_out = _zero_linear(attn_dim, dim)

    def memory(self, ref_emb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, attn_dim) keys and values: the learned patterns, or the references' projections."""
        if not self.from_refs:
            return self.patterns_k, self.patterns_v
        if ref_emb is None:
            raise ValueError("this context stage retrieves from references: pass ref_emb")
        r = self.norm_ref(ref_emb)
        return self.ref_k(r), self.ref_v(r)

    def retrieve(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``x`` plus what the Hopfield layer retrieves for each row (any leading shape)."""
        q = self.hop_q(self.norm_hop(x))
        scores = (q @ keys.t()) * (self.log_beta.exp() / math.sqrt(self.attn_dim))
        return x + self.hop_out(torch.softmax(scores, dim=-1) @ values)

    def forward(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
        ref_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted support and query embeddings (see the class docstring for shapes)."""
        mem_k, mem_v = self.memory(ref_emb)
        s = self.retrieve(support_emb, mem_k, mem_v)
        q = self.retrieve(query_emb, mem_k, mem_v)
        y = support_y.unsqueeze(-1)
        s_n = self.norm_s(s)
        keys = self.att_k(s_n) + y * self.label_k[1] + (1.0 - y) * self.label_k[0]
        values = self.att_v(s_n) + y * self.label_v[1] + (1.0 - y) * self.label_v[0]
        # Padded support rows get a large negative score (an additive mask exports cleanly).
        pad = (support_mask.unsqueeze(1) - 1.0) * 1e9  # (B, 1, S)

        def attend(x: torch.Tensor) -> torch.Tensor:
            scores = self.att_q(self.norm_x(x)) @ keys.transpose(1, 2) / math.sqrt(self.attn_dim)
            return x + self.att_out(torch.softmax(scores + pad, dim=-1) @ values)

        return attend(s), attend(q)


class ContextMultiHeadLearner(MultiHeadLearner):
    """``multihead`` whose heads read embeddings adapted by an ``EpisodeContext`` stage."""

    name = "context"

    def __init__(
        self,
        encoder: nn.Module,
        dim: int,
        gp_kernel: str = "global",
        memory: int = 256,
        attn_dim: int = 64,
        refs: int = 0,
        in_dim: int = 0,
    ) -> None:
        """The multihead heads on ``encoder`` (embedding size ``dim``) behind the context stage.

        ``refs`` > 0 retrieves from that many reference molecules (``in_dim`` features each, set
        with ``set_references``) instead of ``memory`` learned patterns.
        """
        super().__init__(encoder, gp_kernel=gp_kernel)
        self.context = EpisodeContext(dim, memory=memory, attn_dim=attn_dim, from_refs=refs > 0)
        self.ref_x: torch.Tensor | None
        if refs > 0:
            if in_dim < 1:
                raise ValueError("reference molecules need the feature size in_dim")
            self.register_buffer("ref_x", torch.zeros(refs, in_dim))
        else:
            self.ref_x = None

    def set_references(self, x: torch.Tensor) -> None:
        """Fix the reference molecules' features, (refs, in_dim)."""
        if self.ref_x is None or tuple(x.shape) != tuple(self.ref_x.shape):
            want = None if self.ref_x is None else tuple(self.ref_x.shape)
            raise ValueError(f"references of shape {tuple(x.shape)}; this learner takes {want}")
        self.ref_x.copy_(x)

    def _ref_emb(self) -> torch.Tensor | None:
        return None if self.ref_x is None else self.encoder(self.ref_x)

    def head_logits(
        self, support_emb: torch.Tensor, support_y: torch.Tensor, query_emb: torch.Tensor
    ) -> list[torch.Tensor]:
        """(Q,) logits of every head on the context-adapted embeddings."""
        mask = torch.ones_like(support_y)
        s, q = self.context(
            support_emb.unsqueeze(0),
            support_y.unsqueeze(0),
            mask.unsqueeze(0),
            query_emb.unsqueeze(0),
            self._ref_emb(),
        )
        return super().head_logits(s[0], support_y, q[0])

    def batched_head_logits(
        self,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
    ) -> list[torch.Tensor]:
        """(B, Q) logits of every head on the context-adapted embeddings of B padded tasks."""
        s, q = self.context(support_emb, support_y, support_mask, query_emb, self._ref_emb())
        return super().batched_head_logits(s, support_y, support_mask, q)
