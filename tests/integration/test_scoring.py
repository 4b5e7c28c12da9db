from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metascreen.domains.errors import ArtifactMismatchError
from metascreen.models.serving.molecules import OnnxPredictor, score_library
from tiny_data import make_smiles

pytestmark = pytest.mark.integration


def _support_and_library(tmp_path: Path) -> tuple[Path, Path, int]:
    rows = make_smiles(60, seed=42)
    sup = pd.DataFrame(rows[:12], columns=["SMILES", "label"]).astype({"label": int})
    sup.to_csv(tmp_path / "support.csv", index=False)
    lib = [s for s, _ in rows[12:]] + ["", "C1CC", "not a smiles"]
    lib.insert(5, "c1ccccc")  # an invalid row in the middle
    pd.DataFrame({"id": [f"m{i}" for i in range(len(lib))], "SMILES": lib}).to_csv(
        tmp_path / "lib.csv", index=False
    )
    return tmp_path / "support.csv", tmp_path / "lib.csv", len(lib)


def test_scoring_reconciles_rows_and_quarantines(tiny_model: Path, tmp_path: Path) -> None:
    support, library, n = _support_and_library(tmp_path)
    rep = score_library(
        tiny_model,
        support,
        library,
        tmp_path / "out.parquet",
        chunk_size=7,
        workers=2,
        progress=False,
    )
    out = pd.read_parquet(tmp_path / "out.parquet")
    q = pd.read_csv(rep.quarantine, keep_default_na=False)
    assert rep.n_input == n == len(out) + len(q)
    assert rep.n_quarantined == 4
    assert sorted(out["row"].tolist() + q["row"].tolist()) == list(range(n))
    assert set(q["input"]) == {"", "C1CC", "not a smiles", "c1ccccc"}
    assert q["reason"].str.len().min() > 5
    assert out["score"].between(0, 1).all() and out["id"].notna().all()


def test_chunking_and_workers_do_not_change_scores(tiny_model: Path, tmp_path: Path) -> None:
    support, library, _ = _support_and_library(tmp_path)
    a = score_library(
        tiny_model,
        support,
        library,
        tmp_path / "a.parquet",
        chunk_size=5,
        workers=1,
        progress=False,
    )
    b = score_library(
        tiny_model,
        support,
        library,
        tmp_path / "b.parquet",
        chunk_size=1000,
        workers=2,
        progress=False,
    )
    assert a.n_scored == b.n_scored
    pd.testing.assert_frame_equal(pd.read_parquet(a.output), pd.read_parquet(b.output))


def test_scoring_runs_where_torch_cannot_be_imported(tiny_model: Path, tmp_path: Path) -> None:
    support, library, n = _support_and_library(tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name.startswith("torch_geometric"):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, _Block())
        from metascreen.models.serving.molecules import score_library
        rep = score_library({str(tiny_model)!r}, {str(support)!r}, {str(library)!r}, {str(tmp_path / "nt.parquet")!r}, workers=1, progress=False)
        assert "torch" not in sys.modules
        print(rep.n_input, rep.n_scored, rep.n_quarantined)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    n_in, n_sc, n_q = map(int, out.stdout.split())
    assert n_in == n == n_sc + n_q


def test_onnx_matches_torch_weights_on_real_features(tiny_model: Path) -> None:
    import torch

    from metascreen.models.learners.registry import LearnerConfig, build_learner

    pred = OnnxPredictor.load(tiny_model, device="cpu")
    cfg = json.loads((tiny_model / "config.json").read_text())
    learner = build_learner(LearnerConfig.model_validate(cfg["learner"]), pred.featurizer.dim)
    from metascreen.models.training.export import load_weights

    learner.load_state_dict(
        load_weights(tiny_model, json.loads((tiny_model / "metadata.json").read_text()))
    )
    learner.eval()
    from metascreen.domains.molecules.featurize import parse_smiles

    rows = make_smiles(50, seed=9)
    x = pred.featurizer.transform([parse_smiles(s) for s, _ in rows])
    y = np.array([lab for _, lab in rows], np.float32)
    got = pred.logits(x[:11], y[:11], x[11:])
    with torch.no_grad():
        want = learner(
            torch.as_tensor(x[:11]), torch.as_tensor(y[:11]), torch.as_tensor(x[11:])
        ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tampered_artifact_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["featurizer"]["spec"]["params"]["radius"] = 3
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactMismatchError, match="featurizer hash"):
        OnnxPredictor.load(bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        OnnxPredictor.load(bad)
