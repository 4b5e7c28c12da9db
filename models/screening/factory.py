"""Every picker behind one name: per domain, a table name → (what it needs, how it is built).

``simulate molecules``, ``simulate movielens`` and ``propose`` resolve a ``--policy`` name here,
so the names a command accepts and the pickers they build are written once. numpy/onnxruntime
only: builders receive what they need (features, a predictor, a policy runner) in a context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from metascreen.domains.errors import ConfigError
from metascreen.models.screening.simulator import Picker, RandomPicker

if TYPE_CHECKING:
    from metascreen.models.screening.pickers import GreedyPicker

# what a picker needs before it can be built:
#   ecfp       ECFP4 bits of the pool (baseline featurizer)
#   predictor  the few-shot predictor (its featurizer's rows ``x``, its ``logits``, ECFP ``bits``
#              of the same rows, optional encoder ``embeddings``)
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


# Baseline knobs. Defaults were chosen on a held-out slice of FS-Mol *train* assays, never on
# valid (docs/screening-policy.md, benchmarks/policy/); override with ``options``.
# Where each default came from (written into every simulate JSON next to the knobs used).
PRIOR_WEIGHT_DEFAULT = 1.0
PICKER_DEFAULTS_CHOSEN_ON: Mapping[str, str] = {
    "cold_start": "FS-Mol train slice (--train-slice 0.05 --slice-seed 0 --min-task-size 128, "
    "24 tasks x 2 repeats, active fraction 0.1): far 6.21 vs oneclass 6.29 hits@32, paired "
    "-0.08 +- 0.17 (a tie); far kept, it needs no predictor call before the first active",
    "prior_file": "the shipped prior (data/artifacts/activity-prior-default.json, fitted by "
    "`metascreen train prior` on FS-Mol train without the 0.1/0 slice)",
    "prior_weight": "FS-Mol train slice (--train-slice 0.1 --slice-seed 0 --min-task-size 128, "
    "51 tasks x 3 repeats): hits@32 at active fraction 0.1, batch 1 / batch 8: w=0 6.18 / 6.01, "
    "w=0.5 6.35 / 6.12, w=1 6.40 / 6.11, w=2 6.24 / 6.10; w=1 kept",
    "ens_m": "not tuned (default)",
    "ens_strength": "not tuned (default)",
    "thompson_temperature": "not tuned (default)",
}
PICKER_DEFAULTS: Mapping[str, Any] = {
    "cold_start": "far",  # greedy/ens/thompson before the first active: random|far|oneclass|prior
    "prior_file": "",  # cold_start=prior / greedy-prior: `train prior`'s JSON ("" = shipped)
    "prior_weight": PRIOR_WEIGHT_DEFAULT,  # cold_start=prior: logits + w * prior afterwards
    "ens_m": 32,  # ENS: candidates that get the lookahead
    "ens_strength": 1.0,  # ENS: predictor weight against one identical neighbour
    "thompson_temperature": 1.0,  # Thompson: scale of the posterior variance
}


def picker_option(ctx: Any, key: str) -> Any:
    """``ctx.options[key]`` if set, else the default above (typed like the default)."""
    options = getattr(ctx, "options", None) or {}
    if key not in PICKER_DEFAULTS:
        raise ConfigError(
            f"unknown picker option {key!r}; choose one of {', '.join(PICKER_DEFAULTS)}"
        )
    default = PICKER_DEFAULTS[key]
    value = options.get(key, default)
    return type(default)(value)


def _greedy_with(ctx: Any, cold_start: str, name: str) -> GreedyPicker:
    from metascreen.models.screening.pickers import GreedyPicker

    return GreedyPicker(
        ctx.predictor.logits,
        ctx.x,
        name=name,
        cold_start=cold_start,
        bits=getattr(ctx, "bits", None),
        embeddings=getattr(ctx, "embeddings", None),
        prior=getattr(ctx, "prior", None),
        prior_weight=picker_option(ctx, "prior_weight") if cold_start == "prior" else 0.0,
    )


def _greedy(ctx: Any) -> Picker:
    return _greedy_with(ctx, picker_option(ctx, "cold_start"), "greedy")


def _greedy_random_start(ctx: Any) -> Picker:
    return _greedy_with(ctx, "random", "greedy-random-start")


def _greedy_prior(ctx: Any) -> Picker:
    return _greedy_with(ctx, "prior", "greedy-prior")


def _ens(ctx: Any) -> Picker:
    from metascreen.models.screening.pickers import EnsPicker

    greedy = _greedy_with(ctx, picker_option(ctx, "cold_start"), "ens")
    return EnsPicker(
        greedy, ctx.bits, m=picker_option(ctx, "ens_m"), strength=picker_option(ctx, "ens_strength")
    )


def _thompson(ctx: Any) -> Picker:
    from metascreen.models.screening.pickers import ThompsonPicker

    greedy = _greedy_with(ctx, picker_option(ctx, "cold_start"), "thompson")
    return ThompsonPicker(greedy, ctx.bits, temperature=picker_option(ctx, "thompson_temperature"))


def _molecule_policy(ctx: Any) -> Picker:
    from metascreen.models.serving.policy import OnnxPolicyPicker

    return OnnxPolicyPicker(ctx.runner, ctx.runner.embed(ctx.x), name=ctx.label)


def _popular(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import PopularPicker

    return PopularPicker(ctx.table.mf.item_count)


def _greedy_rating(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import GreedyRatingPicker

    return GreedyRatingPicker(ctx.predictor, ctx.table.rows(ctx.table.item_ids), ctx.hidden)


def _greedy_topn(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import GreedyTopNPicker

    return GreedyTopNPicker(ctx.predictor.topn, ctx.table.mf.item_count, ctx.hidden)


def _greedy_ease(ctx: Any) -> Picker:
    from metascreen.models.evaluation.topn_refs import item_counts, reference_fns
    from metascreen.models.screening.movielens import FnScorer, GreedyTopNPicker

    items = list(ctx.table.item_ids)
    fns, _ = reference_fns("ease", ctx.train_ratings, items, (10,))
    counts = item_counts(ctx.train_ratings, items)
    return GreedyTopNPicker(FnScorer(fns[10]), counts, ctx.hidden, name="greedy-ease")


def _rating_policy(ctx: Any) -> Picker:
    from metascreen.models.screening.movielens import load_policy_picker

    return load_policy_picker(ctx.model_dir, ctx.metadata, ctx.table.item_ids)


MOLECULE_PICKERS: Mapping[str, PickerSpec] = {
    "random": PickerSpec("ecfp", lambda ctx: RandomPicker(), "uniformly at random"),
    "greedy": PickerSpec(
        "predictor",
        _greedy,
        "the few-shot predictor re-adapted on the history, highest first; before the first "
        "active, the candidate least like the inactives found so far",
    ),
    "greedy-random-start": PickerSpec(
        "predictor", _greedy_random_start, "greedy, but random picks until the first active"
    ),
    "greedy-prior": PickerSpec(
        "predictor",
        _greedy_prior,
        "greedy whose cold start (the first picks included) ranks by a task-agnostic activity "
        "prior (the shipped one, or --option prior_file=PATH from metascreen train prior)",
    ),
    "ens": PickerSpec(
        "predictor",
        _ens,
        "non-myopic active search (ENS, Jiang et al. 2017) on the predictor's probabilities",
    ),
    "thompson": PickerSpec(
        "predictor",
        _thompson,
        "Thompson sampling: predictor probability + GP posterior covariance on ECFP bits",
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
    "greedy-topn": PickerSpec(
        "catalogue", _greedy_topn, "the model's top-N recommender on the revealed ratings"
    ),
    "greedy-ease": PickerSpec(
        "catalogue",
        _greedy_ease,
        "EASE (λ chosen on a slice of the model's training users, 10 ratings given) on the "
        "revealed ratings",
    ),
    "policy": PickerSpec("catalogue", _rating_policy, "the model's learned policy"),
}


def picker_spec(table: Mapping[str, PickerSpec], name: str) -> PickerSpec:
    """The spec for ``name``, or a ``ConfigError`` listing the names ``table`` knows."""
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(table)}") from None


# the named (non-artifact) pickers of ``simulate molecules --policy``
BASELINE_POLICIES = tuple(n for n in MOLECULE_PICKERS if n != "policy")


def policy_label(policy: str | Path | None) -> str:
    """How a ``--policy`` value is named in reports."""
    if policy is None:
        return "policy-default"
    return str(policy) if str(policy) in BASELINE_POLICIES else Path(policy).name
