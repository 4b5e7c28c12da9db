"""Deep ensemble of independently meta-trained learners (different seeds), exported as one graph."""

from __future__ import annotations

import torch
from torch import nn

from metascreen.models.learners.base import EpisodicLearner, mean_probability_logit


class EnsembleLearner(EpisodicLearner):
    """Averages the members' probabilities; returns the logit of the mean probability.

    Members are trained one after another by the same training loop (seed ``seed + k``), then
    combined; the ensemble itself is not trained further.
    """

    name = "ensemble"
    cache_embeddings = False

    def __init__(self, members: list[EpisodicLearner]) -> None:
        """Hold ``members`` (all on the same featurizer)."""
        super().__init__(nn.Identity())
        self.members = nn.ModuleList(members)
        self.name = f"ensemble-{len(members)}x{members[0].name}"

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """(Q,) logit of the members' mean probability."""
        return mean_probability_logit([m(support_x, support_y, query_x) for m in self.members])
