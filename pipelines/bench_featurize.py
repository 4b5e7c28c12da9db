"""``metascreen bench featurize``: what each block of the molecule featurizer costs.

On ``n`` distinct FS-Mol SMILES (a seeded sample of the task files), in one process and one run:

* ``featurize_mol_per_s``: the model's featurizer from SMILES (``transform_smiles``, 1 process);
* ``parse_ecfp_mol_per_s``: RDKit parse + 2048-bit Morgan radius-2 bit vector only (the floor);
* ``blocks``: µs per molecule of each part of the featurizer, timed one by one on every molecule:
  parse, Morgan bits and counts at the model's radius (and counts at each further radius of a
  union featurizer), each descriptor family as the featurizer
  computes it (``descriptors.DescriptorCalculator``; work shared by several families is its own
  block), the graph block if any — and, next to each descriptor family, the same
  family through RDKit's ``Descriptors`` functions one by one (``us_per_mol_rdkit_functions``).

The three are interleaved chunk by chunk, so load from other processes weighs on all of them alike;
the two throughputs are also given from this process's CPU time (``*_cpu_*``), which other
processes' load disturbs less than wall time. Not a block of its own: the descriptor scaling
(elementwise over the batch, about 1 µs per molecule) and Python's loop overhead, which make the
difference between ``featurize_us_per_mol`` and ``blocks_total_us_per_mol``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from metascreen.domains.io import atomic_write_json, atomic_write_text
from metascreen.domains.molecules.descriptors import (
    DESCRIPTOR_ERRORS,
    DESCRIPTOR_FNS,
    DescriptorCalculator,
    descriptor_family,
)
from metascreen.domains.molecules.featurize import MoleculeFeaturizer, parse_smiles
from metascreen.domains.molecules.load import find_task_files, read_fsmol_file
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR, read_artifact
from metascreen.pipelines.bench import cpu_info, cpu_line

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# The full FS-Mol train split on the team's machine; the bundled sample is the fallback.
SHARED_FSMOL_TRAIN = Path("/work/shared/data/fsmol/train")
BUNDLED_FSMOL_TRAIN = DATA_DIR / "fsmol-sample" / "train"


def default_smiles_dir() -> Path:
    """FS-Mol train task files: the shared full copy if present, else the bundled sample."""
    return SHARED_FSMOL_TRAIN if SHARED_FSMOL_TRAIN.is_dir() else BUNDLED_FSMOL_TRAIN


def sample_smiles(data_dir: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct valid SMILES (fewer if the files hold fewer), the same for the same seed.

    Task files are read in a seeded order until twice ``n`` distinct SMILES are in hand; ``n`` of
    them are then drawn without replacement.
    """
    files = find_task_files(data_dir)
    rng = np.random.default_rng(seed)
    found: set[str] = set()
    for i in rng.permutation(len(files)).tolist():
        found.update(read_fsmol_file(files[i]).smiles)
        if len(found) >= 2 * n:
            break
    pool = sorted(s for s in found if parse_smiles(s) is not None)
    idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(idx.tolist())]


class _Clock:
    """Seconds accumulated per named block."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def _time_blocks(fz: MoleculeFeaturizer, smiles: list[str], clock: _Clock, ref: _Clock) -> None:
    """Time each block of ``fz`` on ``smiles`` (fast path in ``clock``, RDKit's in ``ref``)."""
    pc = time.perf_counter
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=fz.radius, fpSize=fz.n_bits)
    r = fz.radius
    calc = DescriptorCalculator(fz.descriptors) if fz.descriptors else None
    for s in smiles:
        t0 = pc()
        mol = Chem.MolFromSmiles(s)
        t1 = pc()
        gen.GetFingerprintAsNumPy(mol)
        t2 = pc()
        np.log1p(gen.GetCountFingerprintAsNumPy(mol).astype(np.float32))
        t3 = pc()
        clock.add("parse (MolFromSmiles)", t1 - t0)
        clock.add(f"Morgan r={r} {fz.n_bits} bits", t2 - t1)
        clock.add(f"Morgan r={r} {fz.n_bits} counts + log1p", t3 - t2)
        for extra in fz.extra_radii:  # the union featurizer's further fingerprint blocks
            t = pc()
            fz.fingerprint(mol, extra)
            clock.add(f"Morgan r={extra} {fz.n_bits} counts + log1p", pc() - t)
        if calc is not None:
            ctx: dict[str, Any] = {}
            out: dict[str, float] = {}
            for block in calc.blocks:
                t = pc()
                block.run(mol, ctx, out)
                clock.add(f"descriptors: {block.name}", pc() - t)
        if fz.graph_atoms > 0:
            t = pc()
            fz.graph_block(mol)
            clock.add(f"graph block ({fz.graph_atoms} atoms)", pc() - t)
    if calc is not None:
        for s in smiles:  # a fresh molecule: RDKit caches some results on the Mol object
            mol = Chem.MolFromSmiles(s)
            for name in fz.descriptors:
                t = pc()
                with contextlib.suppress(*DESCRIPTOR_ERRORS):
                    DESCRIPTOR_FNS[name](mol)
                ref.add(f"descriptors: {descriptor_family(name)}", pc() - t)


def run_featurize_bench(
    n: int = 20_000,
    model: Path | None = None,
    data_dir: Path | None = None,
    chunk: int = 500,
    seed: int = 0,
    json_out: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns (and with ``json_out`` writes) the contract JSON + Markdown."""
    t_all = time.perf_counter()
    model_dir = Path(model or DEFAULT_MODEL_DIR)
    info = read_artifact(model_dir)
    fz = MoleculeFeaturizer.from_spec(
        info.metadata["featurizer"]["spec"], info.metadata["featurizer"]["hash"]
    )
    src = Path(data_dir) if data_dir is not None else default_smiles_dir()
    smiles = sample_smiles(src, n, seed)
    logger.info("%d SMILES sampled from %s", len(smiles), src)
    load_start = os.getloadavg()
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fz.transform_smiles(smiles[:20])  # warm-up: generator, descriptor plan, RDKit patterns
    t_feat = t_floor = c_feat = c_floor = 0.0
    cpu = time.process_time
    clock, ref = _Clock(), _Clock()
    for start in range(0, len(smiles), chunk):
        part = smiles[start : start + chunk]
        t, c = time.perf_counter(), cpu()
        for s in part:
            gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s))
        t_floor += time.perf_counter() - t
        c_floor += cpu() - c
        t, c = time.perf_counter(), cpu()
        fz.transform_smiles(part)
        t_feat += time.perf_counter() - t
        c_feat += cpu() - c
        _time_blocks(fz, part, clock, ref)
    m = len(smiles)
    blocks = []
    for name, sec in clock.seconds.items():
        row: dict[str, Any] = {"name": name, "us_per_mol": round(1e6 * sec / m, 1)}
        if name in ref.seconds:
            row["us_per_mol_rdkit_functions"] = round(1e6 * ref.seconds[name] / m, 1)
        blocks.append(row)
    featurize, floor = m / t_feat, m / t_floor
    out: dict[str, Any] = {
        "n": m,
        "featurize_mol_per_s": round(featurize, 1),
        "parse_ecfp_mol_per_s": round(floor, 1),
        "ratio_featurize_to_parse_ecfp": round(featurize / floor, 4),
        "blocks": blocks,
        # details
        "featurize_us_per_mol": round(1e6 * t_feat / m, 1),
        "parse_ecfp_us_per_mol": round(1e6 * t_floor / m, 1),
        "featurize_cpu_mol_per_s": round(m / c_feat, 1),
        "parse_ecfp_cpu_mol_per_s": round(m / c_floor, 1),
        "ratio_featurize_to_parse_ecfp_cpu": round(c_floor / c_feat, 4),
        "blocks_total_us_per_mol": round(1e6 * sum(clock.seconds.values()) / m, 1),
        "rdkit_functions_descriptors_us_per_mol": round(1e6 * sum(ref.seconds.values()) / m, 1),
        "featurizer": fz.spec()["name"],
        "featurizer_hash": fz.hash,
        "n_descriptors": len(fz.descriptors),
        "model": str(model_dir),
        "smiles_source": str(src),
        "seed": seed,
        "chunk": chunk,
        "seconds": round(time.perf_counter() - t_all, 1),
        "cpu_count": os.cpu_count(),
        **cpu_info(),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
    }
    if json_out is not None:
        atomic_write_json(Path(json_out), out)
        atomic_write_text(Path(json_out).with_suffix(".md"), render_markdown(out))
    return out


def render_markdown(r: dict[str, Any]) -> str:
    """The figures and the per-block table as Markdown."""
    lines = [
        f"# metascreen bench featurize (n = {r['n']:,})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| featurizer `{r['featurizer']}` ({r['n_descriptors']} descriptors), 1 process | "
        f"{r['featurize_mol_per_s']:,.0f} mol/s ({r['featurize_us_per_mol']:,.0f} µs/mol) |",
        f"| parse + 2048-bit Morgan r=2 only | {r['parse_ecfp_mol_per_s']:,.0f} mol/s "
        f"({r['parse_ecfp_us_per_mol']:,.0f} µs/mol) |",
        f"| ratio featurize / parse+ECFP | {r['ratio_featurize_to_parse_ecfp']:.3f} |",
        f"| same from CPU time: featurize / parse+ECFP | {r['featurize_cpu_mol_per_s']:,.0f} / "
        f"{r['parse_ecfp_cpu_mol_per_s']:,.0f} mol/s = "
        f"{r['ratio_featurize_to_parse_ecfp_cpu']:.3f} |",
        "",
        "| block | µs/mol | same family via RDKit `Descriptors` functions, µs/mol |",
        "|---|---:|---:|",
    ]
    for b in r["blocks"]:
        ref = b.get("us_per_mol_rdkit_functions")
        lines.append(
            f"| {b['name']} | {b['us_per_mol']:,.1f} | {'' if ref is None else f'{ref:,.1f}'} |"
        )
    lines += [
        f"| **sum of blocks** | **{r['blocks_total_us_per_mol']:,.1f}** | "
        f"descriptors: {r['rdkit_functions_descriptors_us_per_mol']:,.1f} |",
        "",
        f"{r['n']:,} distinct SMILES (seed {r['seed']}) from `{r['smiles_source']}`; model "
        f"`{r['model']}`; {r['cpu_count']} CPUs, {cpu_line(r)}, load average {r['loadavg_start']} at start, "
        f"{r['loadavg_end']} at end; {r['seconds']} s.",
        "",
    ]
    return "\n".join(lines)
