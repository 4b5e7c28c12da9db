"""The in-memory API (``metascreen.FewShotClassifier``, ``propose``, ``Recommender``).

Each object is checked against the command that computes the same thing from files, on the same
rows; the classifier parity check runs where torch cannot be imported.
"""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from metascreen.domains.errors import InputError
from metascreen.pipelines import api
from metascreen.pipelines.cli.main import app
from rec_data import write_ml1m

pytestmark = pytest.mark.integration
runner = CliRunner()
LIBRARY = api.LIBRARY
BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


@pytest.fixture(scope="module")
def support() -> pd.DataFrame:
    return pd.read_csv(LIBRARY / "support.csv")


@pytest.fixture(scope="module")
def clf(support: pd.DataFrame) -> api.FewShotClassifier:
    return api.FewShotClassifier(on_invalid="nan").fit(support["SMILES"], support["label"])


def test_import_metascreen_loads_neither_torch_nor_prefect() -> None:
    code = (
        "import sys, metascreen; "
        "heavy = [m for m in ('torch', 'prefect', 'sklearn', 'metascreen.pipelines.api') "
        "if m in sys.modules]; assert not heavy, heavy; "
        "assert metascreen.FewShotClassifier.__name__ == 'FewShotClassifier'; "
        "assert callable(metascreen.propose) and metascreen.Recommender; "
        "assert 'torch' not in sys.modules and 'prefect' not in sys.modules"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_classifier_equals_score_molecules_on_1000_rows_without_torch(tmp_path: Path) -> None:
    lib = pd.read_csv(LIBRARY / "library.csv", keep_default_na=False).head(1000)
    lib.to_csv(tmp_path / "lib.csv", index=False)
    out = tmp_path / "scores.parquet"
    res = runner.invoke(
        app,
        [
            "score",
            "molecules",
            "--support",
            str(LIBRARY / "support.csv"),
            "--input",
            str(tmp_path / "lib.csv"),
            "--output",
            str(out),
            "--model",
            str(api.DEFAULT_MODEL_DIR),
        ],
    )
    assert res.exit_code == 0, res.output
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import json
        import pandas as pd
        import metascreen
        support = pd.read_csv({str(LIBRARY / "support.csv")!r})
        lib = pd.read_csv({str(tmp_path / "lib.csv")!r}, keep_default_na=False)
        clf = metascreen.FewShotClassifier(on_invalid="nan")
        clf.fit(support["SMILES"].tolist()[:16], support["label"].to_numpy()[:16])
        proba = clf.predict_proba(lib["SMILES"])
        assert "torch" not in sys.modules
        print(json.dumps(proba[:, 1].tolist()))
        """
    )
    sub = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert sub.returncode == 0, sub.stderr
    p = np.asarray(json.loads(sub.stdout), float)
    scores = pd.read_parquet(out)
    assert len(p) == 1000 and len(scores) >= 990  # a few library rows are invalid on purpose
    np.testing.assert_allclose(p[scores["row"].to_numpy()], scores["score"], rtol=0, atol=1e-6)
    invalid = sorted(set(range(1000)) - set(scores["row"]))
    q = pd.read_csv(tmp_path / "scores.quarantine.csv")
    assert invalid == sorted(q["row"]) and np.isnan(p[invalid]).all()


def test_inputs_mols_and_invalid_positions(clf: api.FewShotClassifier) -> None:
    from rdkit import Chem

    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    ref = clf.predict_proba(smiles)
    for variant in (
        np.asarray(smiles),
        pd.Series(smiles),
        np.asarray(smiles, dtype=object)[:, None],
        pd.DataFrame({"id": [1, 2, 3], "SMILES": smiles}),
        [Chem.MolFromSmiles(s) for s in smiles],
    ):
        np.testing.assert_array_equal(clf.predict_proba(variant), ref)
    assert ref.shape == (3, 2) and np.allclose(ref.sum(axis=1), 1.0)
    assert set(clf.predict(smiles).tolist()) <= {0, 1}
    labels = clf.predict(["CCO", "C1CC"])
    assert labels.dtype == np.float64 and np.isnan(labels[1])

    strict = api.FewShotClassifier().set_params(model=clf.model_dir_)
    strict.fit(["CCO", "CCN"], [0, 1])
    with pytest.raises(
        InputError, match=r"2 invalid SMILES in X at positions 1 \('C1CC'.*, 3 \(''"
    ):
        strict.predict_proba(["CCO", "C1CC", "CCN", ""])
    with pytest.raises(InputError, match=r"support set at positions 0 \('xx'"):
        api.FewShotClassifier().fit(["xx", "CCO"], [0, 1])
    with pytest.raises(InputError, match="both actives and inactives"):
        api.FewShotClassifier().fit(["CCN", "CCO"], [1, 1])


def test_sklearn_conventions_clone_and_pipeline(
    clf: api.FewShotClassifier, support: pd.DataFrame
) -> None:
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    params = clf.get_params()
    assert params["on_invalid"] == "nan" and params["model"] is None
    fresh = clone(clf)
    assert fresh.get_params() == params and not hasattr(fresh, "predictor_")
    assert fresh.set_params(chunk_size=2).chunk_size == 2

    frame = support.assign(other=1.0)
    query = pd.DataFrame({"other": [0.0, 0.0], "SMILES": ["CCO", "c1ccccc1O"]})
    ref = clf.predict_proba(query["SMILES"])
    by_function = make_pipeline(
        FunctionTransformer(lambda df: df["SMILES"]), clone(clf).set_params(chunk_size=1)
    ).fit(frame, frame["label"])
    np.testing.assert_allclose(by_function.predict_proba(query), ref, rtol=0, atol=1e-6)
    by_columns = make_pipeline(
        ColumnTransformer([("smiles", "passthrough", ["SMILES"])]), clone(clf)
    ).fit(frame, frame["label"])
    np.testing.assert_array_equal(by_columns.predict_proba(query), ref)
    assert 0.0 <= by_columns.score(frame, frame["label"]) <= 1.0  # ClassifierMixin accuracy


def test_propose_equals_the_command(tmp_path: Path) -> None:
    pool = pd.read_csv(LIBRARY / "library.csv", keep_default_na=False).head(150)
    assayed = pd.read_csv(LIBRARY / "support.csv")
    pool = pd.concat([pool, pool.head(2), assayed.head(1)[["SMILES"]]], ignore_index=True)
    pool.to_csv(tmp_path / "pool.csv", index=False)
    res = runner.invoke(
        app,
        [
            "propose",
            "--assayed",
            str(LIBRARY / "support.csv"),
            "--pool",
            str(tmp_path / "pool.csv"),
            "--output",
            str(tmp_path / "next.csv"),
            "--k",
            "6",
        ],
    )
    assert res.exit_code == 0, res.output
    cli = pd.read_csv(tmp_path / "next.csv", keep_default_na=False)
    got = api.propose(assayed, pool, k=6)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), cli, check_dtype=False)
    q = got.attrs["quarantine"]
    cli_q = pd.read_csv(tmp_path / "next.quarantine.csv")
    assert len(q) == len(cli_q) >= 3 and list(q.columns) == ["row", "input", "reason"]
    assert q["row"].tolist() == cli_q["row"].tolist()


@pytest.fixture(scope="module")
def rec_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from metascreen.models.workflows.movielens import train_rating_model

    data = tmp_path_factory.mktemp("ml1m") / "ml-1m"
    write_ml1m(data)
    out = tmp_path_factory.mktemp("recmodel") / "m"
    return train_rating_model(
        data,
        out,
        {"folds": 2, "hidden": 16, "heads": 2, "dim": 4},
        {"steps": 8, "tasks_per_step": 4, "eval_every": 8, "checkpoint_every": 8, "device": "cpu"},
        holdout_fraction=0.2,
        split_seed=0,
        run_dir=out.parent / "run",
        progress=False,
        policy_cfg={"warm_steps": 0},
        topn_cfg={"lams": (100.0,), "dropouts": (0.9,), "steps": 4, "eval_every": 2, "folds": 2},
    )


def test_recommender_equals_score_movielens(rec_model: Path, tmp_path: Path) -> None:
    ratings = pd.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 3 + ["u3"],
            "item_id": ["1", "2", "3", "4", "5", "6", "nope", "7"],
            "rating": ["5", "3", "4", "1", "2", "5", "4", "nan"],
        }
    )
    cands = pd.DataFrame({"item_id": [str(i) for i in range(1, 31)] + ["12", "zzz"]})
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    cands.to_csv(tmp_path / "cands.csv", index=False)
    out = tmp_path / "top.parquet"
    res = runner.invoke(
        app,
        [
            "score",
            "movielens",
            "--ratings",
            str(tmp_path / "ratings.csv"),
            "--candidates",
            str(tmp_path / "cands.csv"),
            "--output",
            str(out),
            "--model",
            str(rec_model),
            "--k",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    rec = api.Recommender(rec_model)
    got = rec.recommend(ratings, cands, k=5)
    pd.testing.assert_frame_equal(got, pd.read_parquet(out), check_dtype=False)
    assert len(got.attrs["quarantine"]) == len(pd.read_csv(tmp_path / "top.quarantine.csv"))
    # candidates as a plain list, and the whole catalogue by default
    listed = rec.recommend(ratings, cands["item_id"].tolist(), k=5)
    pd.testing.assert_frame_equal(listed, got)
    everything = rec.recommend(ratings, k=3)
    assert everything.groupby("user_id").size().to_dict() == {"u1": 3, "u2": 3}


def test_docstring_examples_run(rec_model: Path) -> None:
    finder = doctest.DocTestFinder()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    doc_runner = doctest.DocTestRunner(optionflags=flags)
    globs = {**vars(api), "REC_MODEL_DIR": rec_model}
    tests = [t for t in finder.find(api, "api", globs=globs) if t.examples]
    names = {t.name.split(".")[-1] for t in tests}
    assert {"api", "FewShotClassifier", "propose", "Recommender"} <= names, names
    for t in tests:
        doc_runner.run(t)
    result = doc_runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted >= 15
