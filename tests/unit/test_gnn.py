"""Dense graph block in the molecule featurizer and the hybrid (MLP + dense GIN) encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem

from metascreen.domains.molecules.featurize import (
    ATOM_FEATURES,
    MoleculeFeaturizer,
    graph_block_size,
    parse_smiles,
)
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.nn.encoders import EncoderConfig, HybridEncoder, build_encoder
from metascreen.models.training.export import export_onnx

pytestmark = pytest.mark.unit

N_ATOMS = 12


def _enc_cfg(**kw: object) -> EncoderConfig:
    base: dict[str, object] = {
        "kind": "hybrid",
        "hidden": (32,),
        "out_dim": 16,
        "graph_atoms": N_ATOMS,
        "gnn_hidden": 16,
        "gnn_layers": 2,
    }
    return EncoderConfig(**{**base, **kw})  # type: ignore[arg-type]


def _split(f: MoleculeFeaturizer, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lay = f.graph_layout
    assert lay is not None
    n = lay.n_atoms
    atoms = row[lay.atoms_offset : lay.mask_offset].reshape(n, lay.atom_features)
    return atoms, row[lay.mask_offset : lay.adj_offset], row[lay.adj_offset :].reshape(n, n)


def test_default_featurizer_has_no_graph_params() -> None:
    f = MoleculeFeaturizer(n_bits=64, descriptors=())
    assert f.graph_layout is None
    assert "graph_atoms" not in f.spec()["params"]
    assert f.dim == 64
    assert f.transform([parse_smiles("CCO")]).shape == (1, 64)


def test_graph_block_layout_and_values_for_ethanol() -> None:
    mols = [parse_smiles(s) for s in ("CCO", "c1ccccc1O", "CC(=O)N")]
    f = MoleculeFeaturizer(n_bits=64, descriptors=("MolWt", "TPSA"), graph_atoms=4).fit(mols)
    lay = f.graph_layout
    assert lay is not None and lay.dense_dim == 66 == f.dense_dim
    assert f.dim == 66 + 4 * ATOM_FEATURES + 4 + 16 == lay.dim
    row = f.transform([mols[0]])[0]
    plain = MoleculeFeaturizer(n_bits=64, descriptors=("MolWt", "TPSA")).fit(mols)
    np.testing.assert_array_equal(row[:66], plain.transform([mols[0]])[0])
    atoms, mask, adj = _split(f, row)
    np.testing.assert_array_equal(mask, [1, 1, 1, 0])
    want = np.zeros((4, 4), np.float32)
    want[0, 1] = want[1, 0] = want[1, 2] = want[2, 1] = 1.0
    np.testing.assert_array_equal(adj, want)
    assert atoms[3].sum() == 0  # padding row
    assert atoms[0, 0] == atoms[1, 0] == 1 and atoms[2, 2] == 1  # C, C, O one-hot
    # benzene ring: aromatic bonds weigh 1.5, adjacency symmetric; amide C=O weighs 2
    _, _, adj_phenol = _split(f, f.transform([mols[1]])[0])
    assert adj_phenol[0, 1] == 1.5 and np.array_equal(adj_phenol, adj_phenol.T)
    _, _, adj_amide = _split(f, f.transform([mols[2]])[0])
    assert adj_amide[1, 2] == 2.0 and adj_amide[1, 3] == 1.0


def test_big_molecule_is_truncated_to_graph_atoms() -> None:
    mol = parse_smiles("C" * 30)  # 30 heavy atoms, chain
    f = MoleculeFeaturizer(n_bits=64, descriptors=(), graph_atoms=N_ATOMS)
    atoms, mask, adj = _split(f, f.transform([mol])[0])
    assert mask.sum() == N_ATOMS and atoms.sum(1).min() > 0
    assert adj.sum() == 2 * (N_ATOMS - 1)  # only bonds among the kept atoms


def test_spec_hash_roundtrip_with_graph_atoms() -> None:
    f = MoleculeFeaturizer(n_bits=64, descriptors=(), graph_atoms=N_ATOMS)
    spec = f.spec()
    assert spec["params"]["graph_atoms"] == N_ATOMS
    g = MoleculeFeaturizer.from_spec(spec, expected_hash=f.hash)
    assert g.graph_atoms == N_ATOMS and g.dim == f.dim
    assert f.hash != MoleculeFeaturizer(n_bits=64, descriptors=()).hash
    assert f.hash != MoleculeFeaturizer(n_bits=64, descriptors=(), graph_atoms=8).hash
    assert f.dim == 64 + graph_block_size(N_ATOMS)


def test_hybrid_encoder_shape_and_layout_check() -> None:
    f = MoleculeFeaturizer(n_bits=64, descriptors=(), graph_atoms=N_ATOMS)
    enc = build_encoder(f.dim, _enc_cfg())
    assert isinstance(enc, HybridEncoder)
    assert enc.layout == f.graph_layout
    x = torch.from_numpy(f.transform([parse_smiles(s) for s in ("CCO", "c1ccccc1", "C")]))
    assert enc.eval()(x).shape == (3, 16)
    with pytest.raises(ValueError, match="graph_atoms"):
        EncoderConfig(kind="hybrid")
    with pytest.raises(Exception, match="no room"):
        build_encoder(10, _enc_cfg())


def test_atom_order_does_not_change_the_embedding() -> None:
    mol = parse_smiles("CC(=O)Nc1ccc(O)cc1")  # paracetamol, 11 heavy atoms
    perm = np.random.default_rng(0).permutation(mol.GetNumAtoms()).tolist()
    shuffled = Chem.RenumberAtoms(mol, perm)
    f = MoleculeFeaturizer(n_bits=64, descriptors=(), graph_atoms=N_ATOMS)
    x = torch.from_numpy(f.transform([mol, shuffled]))
    assert not torch.equal(x[0], x[1])  # the graph blocks differ
    torch.manual_seed(0)
    enc = build_encoder(f.dim, _enc_cfg()).eval()
    with torch.no_grad():
        emb = enc(x)
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=0)


def test_protonet_with_hybrid_encoder_exports_with_parity(tmp_path) -> None:
    f = MoleculeFeaturizer(n_bits=64, descriptors=(), graph_atoms=N_ATOMS)
    torch.manual_seed(0)
    learner = build_learner(LearnerConfig(learner="protonet", encoder=_enc_cfg()), f.dim)
    assert export_onnx(learner, tmp_path / "h.onnx", f.dim) < 1e-4
