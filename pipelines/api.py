"""The in-memory Python API: scikit-learn-style objects over the onnxruntime serving code.

``FewShotClassifier``, ``propose`` and ``Recommender`` take lists, arrays and DataFrames and
return arrays and DataFrames; each computes exactly what the matching command computes from
files (``metascreen score molecules``, ``metascreen propose``, ``metascreen score movielens``),
through the same functions in ``metascreen.models.serving``. They import numpy, pandas, RDKit,
scikit-learn and onnxruntime — never torch or prefect — and are importable from the package
root (``metascreen.FewShotClassifier``; the root resolves them lazily).

The file-based helpers below (``load_tasks``, ``train``, ``evaluate``, ``export``, ``score``)
forward to the workflow of the same stage; training and evaluation import torch when called.

Example:
    >>> import pandas as pd
    >>> import metascreen
    >>> support = pd.read_csv(LIBRARY / "support.csv")
    >>> clf = metascreen.FewShotClassifier().fit(support["SMILES"], support["label"])
    >>> clf.predict_proba(["CCO", "c1ccccc1O"]).shape
    (2, 2)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from metascreen.domains.episodes import TaskSet
from metascreen.domains.errors import InputError
from metascreen.domains.molecules.featurize import canonicalize, invalid_reason, parse_smiles
from metascreen.domains.molecules.load import load_fsmol_dir, load_table_tasks
from metascreen.domains.molecules.prepare import PrepareConfig, PrepareResult
from metascreen.domains.molecules.prepare import prepare_tasks as _prepare_tasks
from metascreen.domains.molecules.prepare_io import resolve_columns, write_prepared
from metascreen.domains.quarantine import QUARANTINE_COLUMNS, QuarantineRows
from metascreen.models.evaluation.molecules import EvalResult
from metascreen.models.registry.store import DEFAULT_NAME, resolve_model_dir
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.models.serving.molecules import (
    OnnxPredictor,
    ScoreReport,
    score_library,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL_DIR",
    "FewShotClassifier",
    "OnnxPredictor",
    "Recommender",
    "evaluate",
    "export",
    "load_table",
    "load_tasks",
    "prepare_tasks",
    "propose",
    "score",
    "train",
]

LIBRARY = DEFAULT_MODEL_DIR.parents[1] / "library"  # the bundled example support set + library


# -- input coercion --------------------------------------------------------------------------------
def _smiles_list(X: Any) -> list[Any]:
    """SMILES (or RDKit ``Mol``s) from a list, array, Series, one-column 2-D array or DataFrame."""
    if isinstance(X, str):
        raise InputError("expected a sequence of SMILES, got one string; wrap it in a list")
    if isinstance(X, pd.DataFrame):
        cols = [c for c in X.columns if str(c).lower() == "smiles"]
        if X.shape[1] != 1 and not cols:
            raise InputError(
                f"a DataFrame input needs one column or a SMILES column; columns are {list(X.columns)}"
            )
        X = X[cols[0]] if cols else X.iloc[:, 0]
    if isinstance(X, pd.Series):
        return X.tolist()
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"expected a 1-D sequence of SMILES, got shape {arr.shape}")
    return arr.tolist()


def _as_smiles(value: Any) -> Any:
    """An RDKit ``Mol`` as its SMILES (as the SDF reader does); anything else unchanged."""
    from rdkit import Chem

    if isinstance(value, Chem.Mol):
        return Chem.MolToSmiles(value)
    return value


def _invalid_message(smiles: list[Any], bad: list[int], what: str) -> str:
    shown = ", ".join(f"{i} ({smiles[i]!r}: {invalid_reason(smiles[i])})" for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} invalid SMILES in {what} at positions {shown}{more}"


class FewShotClassifier(ClassifierMixin, BaseEstimator):
    """Few-shot activity classifier: adapt to a small labelled support set, score new molecules.

    ``fit`` does no training: it featurizes the support set (the assay's labelled compounds,
    both classes needed) and keeps it; ``predict_proba`` runs the artifact's ONNX graph adapted to
    it, so the probabilities equal the ``score`` column of ``metascreen score molecules`` on the
    same rows. Inputs are SMILES or RDKit ``Mol``s as lists, NumPy arrays, pandas Series, a
    one-column 2-D array or a DataFrame with a ``SMILES`` column (so it can follow a column
    selector in a scikit-learn ``Pipeline``).

    Args:
        model: Artifact folder; None = the registry's current model when a registry is set
            (``registry`` or ``$METASCREEN_REGISTRY``), else the shipped model.
        registry: Model registry folder (default ``$METASCREEN_REGISTRY``).
        model_name: Registered model name.
        on_invalid: ``"raise"`` (an ``InputError`` naming the invalid positions) or ``"nan"``
            (their rows of ``predict_proba`` are NaN, their ``predict`` labels NaN). Invalid
            support rows always raise: they carry labels.
        device: onnxruntime provider: ``auto``, ``cpu`` or ``cuda``.
        chunk_size: Rows per inference call (the command's ``--chunk-size``).
        n_jobs: Processes that featurize (forked; the shipped featurizer runs at about 2,000
            rows/s in one process, so ``n_jobs > 1`` pays off on large inputs only).

    Example:
        >>> support = pd.read_csv(LIBRARY / "support.csv")          # 16 labelled compounds
        >>> clf = FewShotClassifier().fit(support["SMILES"], support["label"])
        >>> clf.classes_
        array([0, 1])
        >>> proba = clf.predict_proba(["CCO", "c1ccc2[nH]ccc2c1"])
        >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))
        ((2, 2), True)
        >>> clf.predict(["CCO"]).tolist() in ([0], [1])
        True
        >>> FewShotClassifier(on_invalid="nan").fit(support.SMILES, support.label).predict_proba(
        ...     ["CCO", "C1CC"])[1].tolist()
        [nan, nan]
        >>> clf.predict_proba(["CCO", "C1CC"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        metascreen.domains.errors.InputError: 1 invalid SMILES in X at positions 1 ('C1CC': ...
    """

    def __init__(
        self,
        model: str | Path | None = None,
        registry: str | Path | None = None,
        model_name: str = DEFAULT_NAME,
        on_invalid: Literal["raise", "nan"] = "raise",
        device: str = "cpu",
        chunk_size: int = 4096,
        n_jobs: int = 1,
    ) -> None:
        """Store the parameters (scikit-learn convention: no work in ``__init__``)."""
        self.model = model
        self.registry = registry
        self.model_name = model_name
        self.on_invalid = on_invalid
        self.device = device
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any) -> FewShotClassifier:
        """Adapt to the support set ``X`` (SMILES or ``Mol``s) with binary labels ``y``.

        Raises:
            InputError: invalid support SMILES (positions named), length mismatch, one class only
                or labels that are not two classes.
        """
        if self.on_invalid not in ("raise", "nan"):
            raise InputError(f"on_invalid must be 'raise' or 'nan', got {self.on_invalid!r}")
        smiles = [_as_smiles(s) for s in _smiles_list(X)]
        labels = np.asarray(y.tolist() if isinstance(y, pd.Series) else y).ravel()
        if len(labels) != len(smiles):
            raise InputError(f"X has {len(smiles)} rows but y has {len(labels)}")
        canon = [canonicalize(s) if isinstance(s, str) else None for s in smiles]
        bad = [i for i, c in enumerate(canon) if c is None]
        if bad:
            raise InputError(
                _invalid_message(smiles, bad, "the support set")
                + "; fix or remove them (support rows carry labels)"
            )
        classes = np.unique(labels)
        if len(classes) != 2:
            raise InputError(
                "the support set needs both actives and inactives (two classes in y); got "
                f"{classes.tolist()}"
            )
        self.classes_ = classes  # classes_[1] is the active class (1, True, "active" …)
        y01 = (labels == classes[1]).astype(np.float32)
        self.model_dir_ = resolve_model_dir(self.model, self.registry, self.model_name)
        self.predictor_ = OnnxPredictor.load(self.model_dir_, device=self.device)
        self.support_x_ = self.predictor_.featurizer.transform_smiles([str(c) for c in canon])
        self.support_y_ = y01
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """(n,) logits (float32 values as float64; NaN for invalid rows when allowed)."""
        check_is_fitted(self, "predictor_")
        smiles = [_as_smiles(s) for s in _smiles_list(X)]
        fz = self.predictor_.featurizer
        logits = np.full(len(smiles), np.nan, np.float64)
        bad: list[int] = []
        for lo in range(0, len(smiles), self.chunk_size):
            rows, mols = [], []
            for i in range(lo, min(lo + self.chunk_size, len(smiles))):
                mol = parse_smiles(smiles[i]) if isinstance(smiles[i], str) else None
                if mol is None:
                    bad.append(i)
                    continue
                rows.append(i)
                mols.append(mol)
            if rows and not (bad and self.on_invalid == "raise"):
                if self.n_jobs > 1:
                    chunk = max(64, -(-len(rows) // (4 * self.n_jobs)))
                    x = fz.transform_smiles([smiles[i] for i in rows], self.n_jobs, chunk)
                else:
                    x = fz.transform(mols)
                z = self.predictor_.logits(self.support_x_, self.support_y_, x)
                logits[rows] = z.astype(np.float32)
        if bad:
            if self.on_invalid == "raise":
                raise InputError(
                    _invalid_message(smiles, bad, "X")
                    + "; fix them or use on_invalid='nan' to keep their rows as NaN"
                )
            logger.warning("%d of %d rows have invalid SMILES (NaN)", len(bad), len(smiles))
        return logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) probabilities of inactive and active (column 1 = the command's ``score``)."""
        z = self.decision_function(X)
        p = (1.0 / (1.0 + np.exp(-z))).astype(np.float32).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """(n,) labels from ``classes_`` (active when the probability is ≥ 0.5); NaN if invalid."""
        p = self.predict_proba(X)[:, 1]
        labels = self.classes_[(p >= 0.5).astype(int)]
        if np.isnan(p).any():
            labels = labels.astype(np.float64)
            labels[np.isnan(p)] = np.nan
        return labels

    def __sklearn_tags__(self) -> Any:
        """Inputs are strings (SMILES), not a numeric matrix."""
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags


def _quarantine_frame(q: QuarantineRows) -> pd.DataFrame:
    return pd.DataFrame(q.rows, columns=list(QUARANTINE_COLUMNS))


def _smiles_frame(df: pd.DataFrame, what: str, smiles_column: str | None) -> pd.DataFrame:
    """``df`` with its SMILES column named ``SMILES`` (text), as the table reader returns it."""
    from metascreen.domains.molecules.load import _normalise_smiles_column

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what}: expected a DataFrame, got {type(df).__name__}")
    return _normalise_smiles_column(df.copy(), Path(what), smiles_column)


def propose(
    assayed: pd.DataFrame | None,
    pool: pd.DataFrame,
    k: int = 8,
    policy: str | Path | None = None,
    *,
    budget: int | None = None,
    smiles_column: str | None = None,
    label_column: str = "label",
    device: str = "cpu",
    model_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The next ``k`` compounds to assay: what ``metascreen propose`` writes, as a DataFrame.

    ``policy`` is a policy artifact folder (default: the shipped policy) or a baseline name
    (``greedy``, ``ens``, ``thompson``, …; predictor baselines use ``model_dir``, knobs
    ``options``); the ``k`` picks are one plate, chosen as the simulator picks a batch round.

    ``assayed`` (SMILES + label; None or empty when nothing is assayed yet) and ``pool``
    (SMILES) are DataFrames. Pool compounds already assayed are never proposed. Columns:
    ``rank, row, SMILES, canonical_smiles, score, logit``. Rejected rows (invalid SMILES,
    duplicates, already assayed) are in ``result.attrs["quarantine"]`` (``row, input, reason``).

    Example:
        >>> lib = pd.read_csv(LIBRARY / "library.csv").head(200)
        >>> assayed = pd.read_csv(LIBRARY / "support.csv")
        >>> picks = propose(assayed, lib, k=3)
        >>> picks.columns.tolist()
        ['rank', 'row', 'SMILES', 'canonical_smiles', 'score', 'logit']
        >>> picks["rank"].tolist()
        [1, 2, 3]
    """
    from metascreen.models.serving.policy import propose_frame, resolve_molecule_picker

    resolved = resolve_molecule_picker(
        policy, Path(model_dir) if model_dir else None, options, device
    )
    adf = _smiles_frame(assayed, "assayed", smiles_column) if assayed is not None else None
    q = QuarantineRows()
    out, _ = propose_frame(
        resolved,
        adf,
        _smiles_frame(pool, "pool", smiles_column),
        q,
        k=k,
        budget=budget,
        label_column=label_column,
        assayed_name=Path("assayed"),
        pool_name=Path("pool"),
        seed=seed,
    )
    out.attrs["quarantine"] = _quarantine_frame(q)
    return out


class Recommender:
    """Cold-start recommendation from a MovieLens model artifact (onnxruntime only).

    Args:
        model_dir: A ``movielens-predictor`` artifact folder (``metascreen train movielens``).
        device: onnxruntime provider: ``auto``, ``cpu`` or ``cuda``.

    Example:
        >>> rec = Recommender(REC_MODEL_DIR)     # a trained movielens artifact folder
        >>> ratings = pd.DataFrame(
        ...     {"user_id": ["u1"] * 3, "item_id": ["1", "2", "3"], "rating": [5, 1, 4]})
        >>> top = rec.recommend(ratings, k=4)
        >>> top.columns.tolist(), len(top)
        (['user_id', 'rank', 'item_id', 'score'], 4)
        >>> bool(set(top["item_id"]) & {"1", "2", "3"})
        False
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        """Open and verify the artifact."""
        from metascreen.models.serving.ratings import RatingPredictor

        self.model_dir = Path(model_dir)
        self.model = RatingPredictor(self.model_dir, device=device)

    @property
    def items(self) -> list[str]:
        """The model's item catalogue (item ids)."""
        return list(self.model.table.item_ids)

    def recommend(
        self,
        ratings: pd.DataFrame,
        candidates: pd.DataFrame | Iterable[Any] | None = None,
        k: int = 10,
        objective: str = "auto",
    ) -> pd.DataFrame:
        """Top-``k`` unrated candidates per user: what ``metascreen score movielens`` writes.

        Args:
            ratings: ``user_id, item_id, rating`` rows (one or more users; aliases such as
                ``user``/``item`` accepted).
            candidates: Item ids shared by all users (a list or an ``item_id`` DataFrame), or a
                ``user_id, item_id`` DataFrame of per-user candidates; None = the whole catalogue.
            k: Items per user.
            objective: ``topn`` (the artifact's top-N model: "will watch and like"), ``rating``
                (predicted-rating order) or ``auto`` (top-N when the artifact has one).

        Returns:
            ``user_id, rank, item_id, score`` (the top-N score, or the predicted rating);
            rejected rows are in ``result.attrs["quarantine"]``. Without a ``rating`` column
            every row is a positive (implicit feedback).
        """
        from metascreen.models.serving.ratings import recommend_frame

        if candidates is None:
            cand = pd.DataFrame({"item_id": self.items})
        elif isinstance(candidates, pd.DataFrame):
            cand = candidates
        else:
            cand = pd.DataFrame({"item_id": [str(c) for c in candidates]})
        q = QuarantineRows()
        out, _ = recommend_frame(
            self.model, ratings, cand, q, k, "ratings", "candidates", objective
        )
        out.attrs["quarantine"] = _quarantine_frame(q)
        return out


# -- file-based helpers ----------------------------------------------------------------------------
def prepare_tasks(
    df: pd.DataFrame,
    columns: dict[str, str] | None = None,
    out: str | Path | None = None,
    **options: Any,
) -> PrepareResult:
    """An activity table in memory → FS-Mol-schema tasks (= ``metascreen prepare molecules``).

    Args:
        df: one measurement per row: a ChEMBL web export's columns, or any columns named in
            ``columns``.
        columns: role → column name (``assay``, ``smiles``, ``value``, ``relation``, ``units``,
            ``label``, ``target``, ``target_class``, ``assay_type``).
        out: also write the task folder, ``quarantine.csv``, ``prepare.json`` and ``prepare.md``
            there, as the command does (a new or empty folder).
        **options: ``PrepareConfig`` fields (``min_size``, ``max_size``, ``balance``,
            ``max_mol_weight``, ``split``, ``fractions``, ``seed``, ``workers``, …).

    Returns:
        ``PrepareResult``: ``tasks`` (assay → DataFrame of FS-Mol's fields plus ``row``),
        ``quarantine`` (the input columns + ``row`` + ``reason``), ``summary`` (as
        ``prepare.json``) and ``splits`` (assay → train/valid/test, or "" with ``split="none"``).

    Raises:
        SchemaError: a needed column is missing (naming it).
    """
    cols = resolve_columns(df, "DataFrame", **(columns or {}))
    config = PrepareConfig(**options)
    result = _prepare_tasks(df, cols, config)
    if out is not None:
        write_prepared(result, Path(out), "DataFrame")
    return result


def load_tasks(data_dir: str | Path, workers: int = 1) -> TaskSet:
    """FS-Mol-format task folder → ``TaskSet`` (canonical SMILES; invalid rows counted)."""
    return load_fsmol_dir(Path(data_dir), workers=workers)


def load_table(path: str | Path, **kwargs: Any) -> TaskSet:
    """CSV/Parquet/SDF/.smi with SMILES, optional assay column and label (or value + threshold)."""
    return load_table_tasks(Path(path), **kwargs)


def train(
    data_dir: str | Path, out_dir: str | Path, learner: str = "protonet", **train_options: Any
) -> Path:
    """Meta-train ``learner`` on ``data_dir`` (FS-Mol layout) and write an artifact (torch)."""
    from metascreen.models.workflows.molecules import train_model

    init_from = train_options.pop("init_from", None)
    return train_model(
        Path(data_dir), Path(out_dir), {"learner": learner}, train_options, init_from=init_from
    )


def evaluate(
    data_dir: str | Path,
    model: str | Path | None = None,
    support_sizes: tuple[int, ...] = (16,),
    repeats: int = 10,
    seed: int = 0,
) -> tuple[dict[int, EvalResult], str, int]:
    """FS-Mol protocol with an artifact (onnxruntime) or a baseline name (``rf``, ``knn``)."""
    from metascreen.models.workflows.molecules import evaluate_model

    return evaluate_model(Path(data_dir), model, support_sizes, repeats, seed, progress=False)


def export(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Re-export an artifact's weights to ONNX with a parity check (torch)."""
    from metascreen.models.workflows.molecules import export_model

    return export_model(Path(model_dir), Path(out_dir))


def score(
    model_dir: str | Path,
    support: str | Path,
    library: str | Path,
    output: str | Path,
    **kwargs: Any,
) -> ScoreReport:
    """Adapt to ``support`` and score ``library`` into ``output`` (Parquet/CSV/SDF by suffix)."""
    return score_library(Path(model_dir), Path(support), Path(library), Path(output), **kwargs)
