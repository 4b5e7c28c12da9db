"""Every picker behind one name: per domain, a table name → (what it needs, how it is built).

``simulate molecules``, ``simulate movielens`` and ``propose`` resolve a ``--policy`` name here,
so the names a command accepts and the pickers they build are written once. numpy/onnxruntime
only: builders receive what they need (features, a predictor, a policy runner) in a context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from metascreen.domains.errors import ConfigError
from metascreen.models.screening.simulator import Picker, RandomPicker

# what a picker needs before it can be built:
#   ecfp       ECFP4 bits of the pool (baseline featurizer)
#   predictor  the few-shot predictor (its featurizer's rows and its ``logits``)
#   policy     a policy artifact (its featurizer, encoder and policy graph)
#   catalogue  a movielens model's item table (and the users' hidden ratings)
Needs = Literal["ecfp", "predictor", "policy", "catalogue"]


@dataclass(frozen=True, slots=True)
class PickerSpec:
    """How one named picker is made."""

    needs: Needs
    build: Callable[[Any], Picker]
    help: str


def _knn(ctx: Any) -> Picker:
    from metascreen.models.screening.pickers import KnnPicker

    return KnnPicker(ctx.x > 0.5)


def _gp(ctx: Any) -> Picker:
    from metascreen.models.screening.pickers import GPPicker

    return GPPicker(ctx.x > 0.5)


def _greedy(ctx: Any) -> Picker:
    from metascreen.models.screening.pickers import GreedyPicker

    return GreedyPicker(ctx.predictor.logits, ctx.x)


def _molecule_policy(ctx: Any) -> Picker:
    from metascreen.models.serving.policy import OnnxPolicyPicker

    return OnnxPolicyPicker(ctx.runner, ctx.runner.embed(ctx.x), name=ctx.label)


def _popular(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import PopularPicker

    return PopularPicker(ctx.table.mf.item_count)


def _greedy_rating(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import GreedyRatingPicker

    return GreedyRatingPicker(ctx.predictor, ctx.table.rows(ctx.table.item_ids), ctx.hidden)


def _rating_policy(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import load_policy_picker

    return load_policy_picker(ctx.model_dir, ctx.metadata, ctx.table.item_ids)


MOLECULE_PICKERS: Mapping[str, PickerSpec] = {
    "random": PickerSpec("ecfp", lambda ctx: RandomPicker(), "uniformly at random"),
    "greedy": PickerSpec(
        "predictor", _greedy, "the few-shot predictor re-adapted on the history, highest first"
    ),
    "knn": PickerSpec("ecfp", _knn, "Tanimoto kNN on ECFP4 bits"),
    "gp": PickerSpec("ecfp", _gp, "GP on ECFP4 bits (Tanimoto kernel), highest mean"),
    "policy": PickerSpec("policy", _molecule_policy, "a learned screening-policy artifact"),
}
MOVIELENS_PICKERS: Mapping[str, PickerSpec] = {
    "random": PickerSpec("catalogue", lambda ctx: RandomPicker(), "uniformly at random"),
    "popular": PickerSpec("catalogue", _popular, "most-rated training items first"),
    "greedy": PickerSpec(
        "catalogue", _greedy_rating, "highest predicted rating, re-adapted every step"
    ),
    "policy": PickerSpec("catalogue", _rating_policy, "the model's learned policy"),
}


def picker_spec(table: Mapping[str, PickerSpec], name: str) -> PickerSpec:
    """The spec for ``name``, or a ``ConfigError`` listing the names ``table`` knows."""
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(table)}") from None
