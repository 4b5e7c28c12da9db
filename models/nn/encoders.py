"""Encoders: molecule features → embedding. The model file knows nothing about training."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from metascreen.domains.errors import ConfigError
from metascreen.domains.molecules.layout import ATOM_FEATURES, GraphLayout, graph_block_size


class EncoderConfig(BaseModel):
    """Fingerprint/descriptor MLP encoder, or that MLP next to a dense GNN (``hybrid``).

    ``hybrid`` reads rows from a featurizer with ``graph_atoms > 0``: the row is
    ``[fingerprint | descriptors | graph block]`` and ``graph_atoms`` / ``atom_features`` fix the
    graph block's layout (``domains.molecules.featurize.GraphLayout``), so the encoder slices the
    row without the featurizer object.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mlp", "hybrid"] = "mlp"
    hidden: tuple[int, ...] = Field((1024, 512), description="hidden layer widths")
    out_dim: int = Field(512, description="embedding size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    input_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the input features")
    graph_atoms: int = Field(
        0, ge=0, le=512, description="hybrid: atoms in the featurizer's graph block"
    )
    atom_features: int = Field(ATOM_FEATURES, ge=1, description="hybrid: features per atom")
    gnn_hidden: int = Field(128, ge=1, description="hybrid: GNN node and graph embedding size")
    gnn_layers: int = Field(3, ge=1, le=10, description="hybrid: DenseGINConv layers")
    input_ranges: tuple[tuple[int, int], ...] = Field(
        (),
        description="mlp: read only these [start, stop) column ranges of each row, in order "
        "(an ensemble member over its own featurizer's columns of a wider row); () = all",
    )

    @model_validator(mode="after")
    def _graph_needed(self) -> EncoderConfig:
        if self.kind == "hybrid" and self.graph_atoms < 1:
            raise ValueError("the hybrid encoder needs graph_atoms ≥ 1")
        if self.input_ranges and self.kind != "mlp":
            raise ValueError("input_ranges are for the mlp encoder only")
        if any(not 0 <= a < b for a, b in self.input_ranges):
            raise ValueError(f"input_ranges {self.input_ranges}: each needs 0 ≤ start < stop")
        return self


class MLPEncoder(nn.Module):
    """MLP over fixed-length features.

    Shapes:
        x: (n, in_dim) → (n, out_dim)
    """

    def __init__(self, in_dim: int, cfg: EncoderConfig) -> None:
        """Build Linear-LayerNorm-ReLU-Dropout blocks and a linear output layer.

        With ``cfg.input_ranges`` the rows are ``in_dim`` wide and the MLP reads the selected
        columns only (contiguous slices, concatenated; the ranges are configuration, not state,
        so the weights are those of the same MLP trained on the narrow rows).
        """
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(cfg.input_dropout)]
        prev = in_dim
        self.ranges = tuple(cfg.input_ranges)
        if self.ranges:
            if max(b for _, b in self.ranges) > in_dim:
                raise ValueError(f"input_ranges {self.ranges} exceed the {in_dim}-wide rows")
            prev = sum(b - a for a, b in self.ranges)
        for h in cfg.hidden:
            layers += [nn.Linear(prev, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            prev = h
        layers.append(nn.Linear(prev, cfg.out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = cfg.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of feature rows."""
        if self.ranges:  # contiguous slices (ONNX Slice + Concat; a Gather is slower)
            x = torch.cat([x[:, a:b] for a, b in self.ranges], dim=1)
        return self.net(x)


class HybridEncoder(nn.Module):
    """MLP over [fingerprint | descriptors] next to a dense GIN over the row's graph block.

    The graph branch embeds the atom features, runs ``gnn_layers`` residual
    ``torch_geometric.nn.DenseGINConv`` layers on the (B, N, N) bond-order adjacency, pools the
    valid atoms with a masked mean and max, and projects; a linear layer maps the concatenation of
    both branches to the embedding. Everything is shape-generic tensor algebra (no control flow on
    values), so it exports to ONNX with a dynamic batch; the pooling is permutation invariant.

    Shapes:
        x: (B, in_dim) → (B, out_dim), with in_dim = dense_dim + graph_block_size(N, F)
    """

    def __init__(self, in_dim: int, cfg: EncoderConfig) -> None:
        """Split ``in_dim`` by the graph layout of ``cfg`` and build both branches."""
        from torch_geometric.nn import DenseGINConv

        super().__init__()
        n, f, h = cfg.graph_atoms, cfg.atom_features, cfg.gnn_hidden
        dense_dim = in_dim - graph_block_size(n, f)
        if dense_dim < 1:
            raise ConfigError(
                f"features of size {in_dim} have no room for a graph block of {n} atoms × {f} "
                "features; featurize with MoleculeFeaturizer(graph_atoms=...) matching the encoder"
            )
        self.layout = GraphLayout(dense_dim, n, f)
        self.mlp = MLPEncoder(dense_dim, cfg)
        self.atom_embed = nn.Linear(f, h)
        self.convs = nn.ModuleList(
            DenseGINConv(nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h)))
            for _ in range(cfg.gnn_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.gnn_layers))
        self.graph_proj = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.out = nn.Linear(cfg.out_dim + h, cfg.out_dim)
        self.in_dim = in_dim
        self.out_dim = cfg.out_dim

    def embed_graph(self, x: torch.Tensor) -> torch.Tensor:
        """(B, gnn_hidden) pooled graph embeddings of the rows' graph blocks."""
        lay = self.layout
        n, f = lay.n_atoms, lay.atom_features
        atoms = x[:, lay.atoms_offset : lay.mask_offset].reshape(-1, n, f)
        mask = x[:, lay.mask_offset : lay.adj_offset]  # (B, N), 1 = atom present
        adj = x[:, lay.adj_offset : lay.dim].reshape(-1, n, n)
        m = mask.unsqueeze(-1)
        # Node states stay ≥ 0 and are zero on padding, so the masked max is a plain max.
        node = torch.relu(self.atom_embed(atoms)) * m
        for conv, norm in zip(self.convs, self.norms, strict=True):
            node = (node + torch.relu(norm(conv(node, adj, mask)))) * m
        mean = node.sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        peak = node.max(1).values
        return self.graph_proj(torch.cat([mean, peak], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of feature rows."""
        dense = self.mlp(x[:, : self.layout.dense_dim])
        return self.out(torch.cat([dense, self.embed_graph(x)], dim=-1))


def build_encoder(in_dim: int, cfg: EncoderConfig) -> nn.Module:
    """Encoder for ``cfg.kind``."""
    if cfg.kind == "hybrid":
        return HybridEncoder(in_dim, cfg)
    return MLPEncoder(in_dim, cfg)
