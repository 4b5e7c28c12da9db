"""Learner configuration and construction (one place that knows every learner)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from metascreen.models.learners.base import EpisodicLearner
from metascreen.models.learners.context import ContextMultiHeadLearner
from metascreen.models.learners.ensemble import EnsembleLearner
from metascreen.models.learners.gp import gp_head
from metascreen.models.learners.maml import AnilLearner
from metascreen.models.learners.matching import MatchingNetLearner
from metascreen.models.learners.multihead import MultiHeadLearner
from metascreen.models.learners.probe import LinearProbeLearner
from metascreen.models.learners.protonet import ProtoNetLearner
from metascreen.models.nn.encoders import EncoderConfig, build_encoder

LearnerName = Literal["protonet", "maml", "matching", "probe", "gp", "multihead", "context"]
META_LEARNERS: tuple[str, ...] = get_args(LearnerName)
BASELINES: tuple[str, ...] = ("rf", "knn")


class LearnerConfig(BaseModel):
    """Which learner, on which encoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learner: LearnerName = Field(
        "protonet", description="meta-learner (probe = linear probe on a frozen encoder)"
    )
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    inner_steps: int = Field(5, ge=1, le=50, description="maml: inner-loop steps on the head")
    inner_lr: float = Field(1.0, gt=0, description="maml: initial inner-loop learning rate")
    probe_steps: int = Field(
        50, ge=1, le=500, description="probe: logistic-regression steps per task"
    )
    probe_lr: float = Field(2.0, gt=0)
    probe_l2: float = Field(0.01, ge=0)
    ensemble_size: int = Field(
        1, ge=1, le=16, description="independently trained members (seeds seed..seed+n-1)"
    )
    gp_kernel: Literal["global", "per-task"] = Field(
        "global",
        description="gp / multihead: one meta-learned kernel lengthscale, or one fitted on each "
        "task's support set (leave-one-out weighting over a grid, ADKF-IFT-style)",
    )
    context_memory: int = Field(
        256, ge=1, le=65_536, description="context: stored patterns of the Hopfield layer"
    )
    context_dim: int = Field(64, ge=1, le=4096, description="context: attention width")
    context_refs: int = Field(
        0,
        ge=0,
        le=65_536,
        description="context: retrieve from this many reference training molecules, re-encoded "
        "by the shared encoder (MHNfs's reference set), instead of learned patterns (0)",
    )

    member_input_ranges: tuple[tuple[tuple[int, int], ...], ...] = Field(
        (),
        description="ensemble: member k's encoder reads these column ranges of the row "
        "(``EncoderConfig.input_ranges``) — members combined from different featurizers over "
        "their union (``models combine``); () = every member reads the whole row",
    )

    @model_validator(mode="after")
    def _refs_need_context(self) -> LearnerConfig:
        if self.context_refs > 0 and self.learner != "context":
            raise ValueError(
                f"context_refs is an option of the context learner, not {self.learner}"
            )
        if self.member_input_ranges and len(self.member_input_ranges) != self.ensemble_size:
            raise ValueError(
                f"member_input_ranges has {len(self.member_input_ranges)} entries for "
                f"{self.ensemble_size} members"
            )
        return self

    def member(self, k: int) -> LearnerConfig:
        """The configuration of ensemble member ``k`` alone (its own input ranges, if any)."""
        encoder = self.encoder
        if self.member_input_ranges:
            encoder = encoder.model_copy(update={"input_ranges": self.member_input_ranges[k]})
        return self.model_copy(
            update={"ensemble_size": 1, "member_input_ranges": (), "encoder": encoder}
        )


HEAD_LEARNERS: tuple[str, ...] = ("protonet", "matching", "gp", "multihead")
"""Learners whose head runs batched over padded supports (``EpisodicLearner.batched_head``)."""


def build_head(name: str, gp_kernel: str = "global") -> EpisodicLearner:
    """The head of learner ``name`` on an identity encoder: it takes embeddings, not features.

    Load a trained learner's head into it with ``head_state(learner)``.
    """
    from torch import nn

    if name not in HEAD_LEARNERS:
        raise ValueError(f"learner {name!r} has no batched head; one of {HEAD_LEARNERS}")
    return _single(name, nn.Identity(), gp_kernel)


def _single(name: str, encoder: Any, gp_kernel: str) -> EpisodicLearner:
    if name == "protonet":
        return ProtoNetLearner(encoder)
    if name == "multihead":
        return MultiHeadLearner(encoder, gp_kernel=gp_kernel)
    if name == "gp":
        return gp_head(encoder, gp_kernel)
    if name == "matching":
        return MatchingNetLearner(encoder)
    raise ValueError(f"learner {name!r} is not a head learner")


def head_state(learner: EpisodicLearner) -> dict[str, Any]:
    """``learner``'s parameters without its encoder's (what ``build_head``'s module holds)."""
    return {
        k: v
        for k, v in learner.state_dict().items()
        if not (k.startswith("encoder.") or ".encoder." in k)
    }


def build_learner(cfg: LearnerConfig, in_dim: int) -> EpisodicLearner:
    """Construct ``cfg.learner`` (an ensemble of ``cfg.ensemble_size`` of them when > 1)."""
    if cfg.ensemble_size > 1:
        return EnsembleLearner(
            [build_single_learner(cfg.member(k), in_dim) for k in range(cfg.ensemble_size)]
        )
    return build_single_learner(cfg, in_dim)


def build_single_learner(cfg: LearnerConfig, in_dim: int) -> EpisodicLearner:
    """Construct the learner ``cfg.learner`` over a fresh encoder for ``in_dim`` features."""
    encoder = build_encoder(in_dim, cfg.encoder)
    if cfg.learner in HEAD_LEARNERS:
        return _single(cfg.learner, encoder, cfg.gp_kernel)
    if cfg.learner == "context":
        return ContextMultiHeadLearner(
            encoder,
            cfg.encoder.out_dim,
            gp_kernel=cfg.gp_kernel,
            memory=cfg.context_memory,
            attn_dim=cfg.context_dim,
            refs=cfg.context_refs,
            in_dim=in_dim,
        )
    if cfg.learner == "maml":
        return AnilLearner(encoder, cfg.encoder.out_dim, cfg.inner_steps, cfg.inner_lr)
    return LinearProbeLearner(encoder, cfg.probe_steps, cfg.probe_lr, cfg.probe_l2)
