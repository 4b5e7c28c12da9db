"""Per-task baselines (scikit-learn on ECFP bits): random forest and Tanimoto kNN."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier

from metascreen.domains.molecules.featurize import MoleculeFeaturizer
from metascreen.domains.types import FloatArray


def baseline_featurizer() -> MoleculeFeaturizer:
    """ECFP4 bit vector, 2048 bits, no descriptors (the FS-Mol baselines' input)."""
    return MoleculeFeaturizer(radius=2, n_bits=2048, counts=False, descriptors=())


def rf_predict(
    support_x: FloatArray, support_y: FloatArray, query_x: FloatArray, seed: int = 0
) -> np.ndarray:
    """Random forest (100 trees, balanced class weights) fitted on the support set."""
    model = RandomForestClassifier(
        n_estimators=100, class_weight="balanced", random_state=seed, n_jobs=1
    )
    model.fit(support_x, support_y > 0.5)
    return np.asarray(model.predict_proba(query_x)[:, 1])


def knn_predict(
    support_x: FloatArray, support_y: FloatArray, query_x: FloatArray, k: int = 5
) -> np.ndarray:
    """k nearest support compounds by Tanimoto (Jaccard) distance, distance-weighted vote."""
    model = KNeighborsClassifier(
        n_neighbors=min(k, len(support_y)), metric="jaccard", weights="distance"
    )
    model.fit(support_x > 0.5, support_y > 0.5)
    proba = model.predict_proba(query_x > 0.5)
    return np.asarray(proba[:, list(model.classes_).index(True)])


BASELINE_FNS = {"rf": rf_predict, "knn": knn_predict}
