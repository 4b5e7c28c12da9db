"""Model registry (atomic ``current`` pointer, hash checks) and the champion/challenger gate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metascreen.domains.errors import ArtifactMismatchError, InputError
from metascreen.models.registry.gate import GateConfig, gate_challenger
from metascreen.models.registry.store import ModelRegistry, resolve_model_dir
from metascreen.pipelines.cli.main import app

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def degraded_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every weight zeroed, exported as a proper artifact (hashes valid).

    A zero encoder maps every molecule to the same embedding, so all query logits tie and
    ΔAUPRC is 0: a deliberately worse challenger the gate must refuse.
    """
    import torch

    from metascreen.models.learners.registry import LearnerConfig, build_learner
    from metascreen.models.training.export import load_weights, write_artifact

    meta = json.loads((tiny_model / "metadata.json").read_text())
    cfg = json.loads((tiny_model / "config.json").read_text())
    dim = meta["onnx"]["inputs"]["query_x"][1]
    learner = build_learner(LearnerConfig.model_validate(cfg["learner"]), dim)
    learner.load_state_dict(load_weights(tiny_model, meta))
    with torch.no_grad():
        for p in learner.parameters():
            p.zero_()
    fz = meta["featurizer"]
    out = tmp_path_factory.mktemp("degraded") / "zeroed"
    return write_artifact(out, learner, dim, fz["spec"], fz["hash"], cfg, {"note": "zeroed"})


def _cfg(tiny_fsmol: Path, margin: float = 0.005) -> GateConfig:
    return GateConfig(str(tiny_fsmol / "valid"), (8,), repeats=3, seed=0, margin=margin, workers=1)


def test_register_promote_rollback_and_pointer(tiny_model: Path, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.current_version("molecules") is None
    with pytest.raises(InputError, match="no current version"):
        reg.resolve("molecules")
    v1 = reg.register(tiny_model, "molecules")
    v2 = reg.register(tiny_model, "molecules")
    assert (v1.version, v2.version) == ("v0001", "v0002")
    assert set(v1.entry["files"]) >= {"model.onnx", "metadata.json", "config.json"}
    reg.promote("molecules", "v0001")
    reg.promote("molecules", "v0002")
    link = tmp_path / "reg" / "molecules" / "current"
    assert link.is_symlink() and os.readlink(link) == "v0002"
    assert reg.resolve("molecules") == tmp_path / "reg" / "molecules" / "v0002"
    assert reg.rollback("molecules") == "v0001"
    assert reg.current_version("molecules") == "v0001"
    actions = [(d["action"], d["from"], d["to"]) for d in reg.decisions("molecules")]
    assert actions == [
        ("promote", None, "v0001"),
        ("promote", "v0001", "v0002"),
        ("rollback", "v0002", "v0001"),
    ]
    # no temporary pointer files are left behind
    assert not [p for p in link.parent.iterdir() if p.name.startswith(".")]


def test_registry_refuses_modified_files(tiny_model: Path, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    mv = reg.register(tiny_model)
    reg.promote("molecules", mv.version)
    cfg = mv.path / "config.json"
    cfg.write_text(cfg.read_text().replace("protonet", "matching"))
    with pytest.raises(ArtifactMismatchError, match="config.json: sha256 differs"):
        reg.resolve("molecules")
    with pytest.raises(ArtifactMismatchError):
        reg.promote("molecules", mv.version)


def test_scoring_uses_the_registry_current_model(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR

    monkeypatch.delenv("METASCREEN_REGISTRY", raising=False)
    assert resolve_model_dir(None) == DEFAULT_MODEL_DIR
    reg = ModelRegistry(tmp_path / "reg")
    reg.promote("molecules", reg.register(tiny_model).version)
    monkeypatch.setenv("METASCREEN_REGISTRY", str(tmp_path / "reg"))
    assert resolve_model_dir(None) == tmp_path / "reg" / "molecules" / "v0001"
    assert resolve_model_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_gate_refuses_a_degraded_challenger(
    tiny_model: Path, degraded_model: Path, tiny_fsmol: Path, tmp_path: Path
) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    first = gate_challenger(reg, tiny_model, _cfg(tiny_fsmol))
    assert first.promote and first.champion is None and first.challenger == "v0001"
    assert first.challenger_score > 0.1  # the tiny model learned the planted label

    d = gate_challenger(reg, degraded_model, _cfg(tiny_fsmol))
    assert not d.promote, d.reason
    assert d.champion == "v0001" and d.challenger == "v0002"
    assert abs(d.challenger_score) < 0.02  # tied logits: AP equals the active fraction
    assert d.champion_score == pytest.approx(first.challenger_score)  # same episodes, same seeds
    assert reg.current_version("molecules") == "v0001"
    with pytest.raises(InputError, match="no earlier current version"):
        reg.rollback("molecules")  # a refused challenger is not a switch to undo
    last = reg.decisions("molecules")[-1]
    assert last["action"] == "gate" and last["promote"] is False
    assert last["challenger_score"] == d.challenger_score
    assert last["champion_score"] == d.champion_score


def test_gate_promotes_a_better_challenger_and_respects_the_margin(
    tiny_model: Path, degraded_model: Path, tiny_fsmol: Path, tmp_path: Path
) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    gate_challenger(reg, degraded_model, _cfg(tiny_fsmol))  # a weak champion
    d = gate_challenger(reg, tiny_model, _cfg(tiny_fsmol))
    assert d.promote and reg.current_version("molecules") == "v0002"
    # the same model again does not beat itself by any positive margin
    again = gate_challenger(reg, tiny_model, _cfg(tiny_fsmol, margin=0.0))
    assert not again.promote and reg.current_version("molecules") == "v0002"
    # a margin larger than the gain keeps the weak champion
    reg2 = ModelRegistry(tmp_path / "reg2")
    gate_challenger(reg2, degraded_model, _cfg(tiny_fsmol))
    big = gate_challenger(reg2, tiny_model, _cfg(tiny_fsmol, margin=0.99))
    assert not big.promote and reg2.current_version("molecules") == "v0001"


def test_models_cli(tiny_model: Path, tmp_path: Path) -> None:
    reg = str(tmp_path / "reg")
    res = runner.invoke(app, ["models", "register", str(tiny_model), "--registry", reg])
    assert res.exit_code == 0, res.output
    runner.invoke(app, ["models", "register", str(tiny_model), "--registry", reg, "--promote"])
    res = runner.invoke(app, ["models", "promote", "molecules", "v0001", "--registry", reg])
    assert res.exit_code == 0 and "current -> v0001" in res.output
    res = runner.invoke(app, ["models", "list", "molecules", "--registry", reg, "--decisions"])
    assert res.exit_code == 0 and "* v0001" in res.output and "  v0002" in res.output
    res = runner.invoke(app, ["models", "rollback", "molecules", "--registry", reg])
    assert res.exit_code == 0 and "current -> v0002" in res.output, res.output
    res = runner.invoke(app, ["models", "promote", "molecules", "v0009", "--registry", reg])
    assert res.exit_code == 2 and "not registered" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["models", "list", "molecules"], env={"METASCREEN_REGISTRY": ""})
    assert res.exit_code == 2 and "no model registry" in res.output


def test_int8_quantized_artifact_tracks_fp32(tiny_model: Path, tmp_path: Path) -> None:
    import numpy as np

    from metascreen.domains.molecules.featurize import parse_smiles
    from metascreen.models.registry.quantize import quantize_artifact
    from metascreen.models.serving.molecules import OnnxPredictor
    from tiny_data import make_smiles

    q = quantize_artifact(tiny_model, tmp_path / "int8")
    a = OnnxPredictor.load(tiny_model, device="cpu")
    b = OnnxPredictor.load(q, device="cpu")  # verifies the new sha256
    assert b.info.metadata["quantized_from"]["onnx_sha256"] == a.info.metadata["onnx"]["sha256"]
    rows = make_smiles(60, seed=3)
    x = a.featurizer.transform([parse_smiles(s) for s, _ in rows])
    y = np.array([lab for _, lab in rows], np.float32)
    la, lb = a.logits(x[:12], y[:12], x[12:]), b.logits(x[:12], y[:12], x[12:])
    assert not np.array_equal(la, lb)  # it really is a different (quantized) graph
    assert np.corrcoef(la, lb)[0, 1] > 0.99
    with pytest.raises(Exception, match="exists"):
        quantize_artifact(tiny_model, tmp_path / "int8")


def test_int8_stored_artifact_embeds_quantizes_and_tracks_fp32(
    tiny_model: Path, tmp_path: Path
) -> None:
    """``--weights-dtype int8`` storage serves like the float model: scoring, the encoder cut
    the pickers embed with, and ``models quantize`` (which widens the stored codes first)."""
    import numpy as np

    from metascreen.domains.molecules.featurize import parse_smiles
    from metascreen.models.registry.quantize import quantize_artifact
    from metascreen.models.serving.molecules import OnnxPredictor
    from metascreen.models.serving.policy import PredictorEmbedder
    from metascreen.models.workflows.molecules import export_model
    from tiny_data import make_smiles

    stored = export_model(tiny_model, tmp_path / "stored", weights_dtype="int8")
    a = OnnxPredictor.load(tiny_model, device="cpu")
    b = OnnxPredictor.load(stored, device="cpu")
    assert b.info.metadata["weights"]["int8_tensors"] >= 1
    rows = make_smiles(60, seed=4)
    x = a.featurizer.transform([parse_smiles(s) for s, _ in rows])
    y = np.array([lab for _, lab in rows], np.float32)
    la, lb = a.logits(x[:12], y[:12], x[12:]), b.logits(x[:12], y[:12], x[12:])
    assert not np.array_equal(la, lb) and np.corrcoef(la, lb)[0, 1] > 0.999
    ea = PredictorEmbedder(a.info, "cpu").embed(x)
    eb = PredictorEmbedder(b.info, "cpu").embed(x)
    assert ea.shape == eb.shape and np.corrcoef(ea.ravel(), eb.ravel())[0, 1] > 0.999
    q = OnnxPredictor.load(quantize_artifact(stored, tmp_path / "q"), device="cpu")
    assert np.corrcoef(lb, q.logits(x[:12], y[:12], x[12:]))[0, 1] > 0.99


def test_shipped_int8_variant_verifies_and_is_within_tolerance() -> None:
    from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
    from metascreen.models.serving.molecules import OnnxPredictor

    int8 = DEFAULT_MODEL_DIR.parent / "molecules-default-int8"
    if not (int8 / "metadata.json").exists():
        pytest.skip("no shipped int8 model")
    pred = OnnxPredictor.load(int8, device="cpu")
    meta = pred.info.metadata
    fp32 = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())
    assert meta["quantized_from"]["onnx_sha256"] == fp32["onnx"]["sha256"]
    assert meta["featurizer"]["hash"] == fp32["featurizer"]["hash"]
    # measured with `metascreen evaluate` on FS-Mol valid and recorded when it was shipped
    gap = meta["metrics"]["valid"]["16"]["mean"] - meta["metrics"]["fp32_valid"]["16"]["mean"]
    assert abs(gap) <= 0.003
