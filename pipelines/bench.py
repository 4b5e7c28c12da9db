"""``metascreen bench score``: scoring throughput against its physical limit, featurization.

One run measures, on a library of ``n`` valid SMILES sampled with replacement (seeded) from the
bundled library and FS-Mol sample (offline):

* ``score_mol_per_s``: end to end, ``serving.score_library`` (read CSV → parse + featurize in
  ``workers`` forked processes → onnxruntime in the parent, overlapped → Parquet);
* ``featurize_mol_per_s``: the same parse + featurize code (same featurizer, same worker count,
  same chunks) with no model and no output, timed on ``featurize_sample`` molecules of the same
  library — half right before and half right after the scoring run, so load from other
  processes on the machine weighs on both figures alike;
* onnxruntime (fp32 and int8) vs torch forward throughput on the same feature rows (rounds
  interleaved, same thread count);
* peak RSS (``getrusage``): this process, and the largest forked worker.

torch is imported here only, after the scoring and featurization runs (never on the scoring path).
"""

from __future__ import annotations

import csv
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.io import atomic_write_json, atomic_write_text
from metascreen.domains.molecules.featurize import parse_smiles
from metascreen.domains.molecules.load import iter_table_chunks, read_table
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SUPPORT = DATA_DIR / "library" / "support.csv"
DEFAULT_INT8_DIR = DATA_DIR / "artifacts" / "molecules-default-int8"


#: CPU flags that decide int8 and fp32 matrix throughput (onnxruntime's MLAS, torch's oneDNN/MKL).
#: Without a VNNI-class int8 dot product (``avx512_vnni``, ``avx_vnni``, ``amx_int8``), int8
#: matrix products are barely faster than fp32 ones, so ``onnx_vs_torch`` depends on them.
CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU model and its matrix-relevant flags (from ``/proc/cpuinfo`` where it exists).

    ``cpuinfo`` is the file's text (for tests); elsewhere than Linux the flags are unknown.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break  # the first core describes them all
    if not cpuinfo:
        return {"cpu_model": model, "cpu_flags": None, "int8_dot_product": None}
    return {
        "cpu_model": model,
        "cpu_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
        "int8_dot_product": any(f in flags for f in INT8_DOT_FLAGS),
    }


def cpu_line(r: dict[str, Any]) -> str:
    """``CPU model (flags)`` for the Markdown footers."""
    flags = r.get("cpu_flags")
    return f"{r.get('cpu_model', '?')} ({', '.join(flags) if flags else 'flags unknown'})"


def smiles_pool() -> list[str]:
    """Distinct valid SMILES from the bundled library and FS-Mol sample (sorted: deterministic)."""
    from metascreen.domains.molecules.load import load_fsmol_dir

    found = set(read_table(DATA_DIR / "library" / "library.csv")["SMILES"].astype(str))
    for split in ("train", "valid"):
        found.update(load_fsmol_dir(DATA_DIR / "fsmol-sample" / split).items)
    return sorted(s for s in found if parse_smiles(s) is not None)


def write_library(path: Path, n: int, pool: list[str], seed: int = 0, block: int = 50_000) -> None:
    """Stream ``n`` rows (``compound_id``, ``SMILES``) drawn with replacement from ``pool``."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("compound_id", "SMILES"))
        for start in range(0, n, block):
            idx = rng.integers(0, len(pool), size=min(block, n - start))
            w.writerows((f"B{start + i:08d}", pool[j]) for i, j in enumerate(idx.tolist()))


def peak_rss_mb() -> tuple[float, float]:
    """(this process, largest waited-for child) peak resident set size in MB (Linux: KiB units)."""
    unit = 1024.0 if platform.system() == "Linux" else 1.0  # macOS reports bytes
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit / 2**20
    return own, kids


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (forked workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _chunks_between(path: Path, chunk_size: int, start: int, stop: int) -> list[pd.DataFrame]:
    """The library's chunks covering rows [start, stop), read before any timing starts."""
    out = []
    for df in iter_table_chunks(path, chunk_size):
        first = int(df["row"].iloc[0])
        if first >= stop:
            break
        if first + len(df) > start:
            out.append(df)
    return out


def featurize_only(
    model_dir: Path, library: Path, chunk_size: int, workers: int, start: int, stop: int
) -> tuple[int, float, np.ndarray]:
    """(molecules, seconds, first chunk's features): scoring's parse + featurize, nothing else.

    The chunks are read from the CSV first, so the timed part is the forked featurization alone
    (scoring's timing includes reading; that only lowers the ratio).
    """
    from metascreen.models.serving import molecules as serving

    predictor = serving.OnnxPredictor.load(model_dir, device="cpu", threads=1)
    chunks = _chunks_between(library, chunk_size, start, stop)
    n = 0
    first: np.ndarray | None = None
    t = time.perf_counter()
    for _valid, x, bad in serving._prepared_chunks(iter(chunks), predictor.featurizer, workers):
        n += len(x) + len(bad)
        if first is None:
            first = x
    seconds = time.perf_counter() - t
    assert first is not None
    return n, seconds, first


def model_throughput(
    model_dir: Path,
    int8_dir: Path | None,
    s_x: np.ndarray,
    s_y: np.ndarray,
    q_x: np.ndarray,
    threads: int,
    rounds: int = 5,
    min_seconds: float = 0.6,
) -> dict[str, Any]:
    """Rows/s of torch, onnxruntime fp32 and int8 on the same (support, query) features."""
    import torch

    from metascreen.models.serving.artifact import read_artifact
    from metascreen.models.serving.molecules import OnnxPredictor
    from metascreen.models.training.export import load_learner

    torch.set_num_threads(threads)
    learner = load_learner(model_dir, read_artifact(model_dir), q_x.shape[1])[0].eval()
    ts, ty, tq = (torch.as_tensor(a) for a in (s_x, s_y, q_x))

    def torch_run() -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(learner(ts, ty, tq).numpy())

    engines: dict[str, Any] = {"torch": torch_run}
    fp32 = OnnxPredictor.load(model_dir, device="cpu", threads=threads)
    engines["onnx_fp32"] = lambda: fp32.logits(s_x, s_y, q_x)
    if int8_dir is not None:
        int8 = OnnxPredictor.load(int8_dir, device="cpu", threads=threads)
        engines["onnx_int8"] = lambda: int8.logits(s_x, s_y, q_x)
    outputs = {k: f() for k, f in engines.items()}  # warm-up, and parity figures
    rows = dict.fromkeys(engines, 0)
    secs = dict.fromkeys(engines, 0.0)
    for _ in range(rounds):  # interleaved, so background load hits every engine alike
        for k, f in engines.items():
            t = time.perf_counter()
            while time.perf_counter() - t < min_seconds:
                f()
                rows[k] += len(q_x)
            secs[k] += time.perf_counter() - t
    out: dict[str, Any] = {f"{k}_mol_per_s": rows[k] / secs[k] for k in engines}
    for k in engines:
        if k != "torch":
            out[f"{k}_max_abs_logit_diff_vs_torch"] = float(
                np.max(np.abs(outputs[k] - outputs["torch"]))
            )
    return out


def run_score_bench(
    n: int = 100_000,
    model: Path | None = None,
    int8_model: Path | None = None,
    workers: int = 2,
    chunk_size: int = 4096,
    featurize_sample: int = 40_000,
    seed: int = 0,
    work_dir: Path | None = None,
    json_out: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns (and with ``json_out`` writes) the contract JSON + Markdown."""
    from metascreen.models.serving.molecules import OnnxPredictor, score_library, support_features

    t_all = time.perf_counter()
    model_dir = Path(model or DEFAULT_MODEL_DIR)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="metascreen-bench-") as tmp:
        if int8_model is not None:
            int8_dir: Path | None = Path(int8_model)
        elif model is None and DEFAULT_INT8_DIR.exists():
            int8_dir = DEFAULT_INT8_DIR  # the shipped int8 variant of the shipped model
        else:
            from metascreen.models.registry.quantize import quantize_artifact

            int8_dir = quantize_artifact(model_dir, Path(tmp) / "int8")
        lib = Path(tmp) / "library.csv"
        pool = smiles_pool()
        write_library(lib, n, pool, seed)
        logger.info("library: %d rows sampled from %d distinct SMILES", n, len(pool))
        half = max(1, min(featurize_sample, n) // 2)
        c0 = cpu_seconds()
        n_a, s_a, q_x = featurize_only(model_dir, lib, chunk_size, workers, 0, half)
        c1 = cpu_seconds()
        logger.info("featurization only: %d molecules in %.1fs", n_a, s_a)
        rep = score_library(
            model_dir, SUPPORT, lib, Path(tmp) / "scores.parquet", chunk_size, workers,
            progress=progress,
        )  # fmt: skip
        logger.info("scored %d molecules in %.1fs", rep.n_input, rep.seconds)
        c2 = cpu_seconds()
        n_b, s_b, _ = featurize_only(model_dir, lib, chunk_size, workers, n - half, n)
        c3 = cpu_seconds()
        logger.info("featurization only: %d molecules in %.1fs", n_b, s_b)
        if rep.n_scored != n:
            raise RuntimeError(f"benchmark library: {n - rep.n_scored} rows were not scored")
        predictor = OnnxPredictor.load(model_dir, device="cpu", threads=1)
        s_x, s_y = support_features(predictor, SUPPORT)
        threads = os.cpu_count() or 1
        engines = model_throughput(model_dir, int8_dir, s_x, s_y, q_x, threads)
        engines_1t = model_throughput(model_dir, int8_dir, s_x, s_y, q_x, 1, rounds=3)
    own, kids = peak_rss_mb()
    featurize = (n_a + n_b) / (s_a + s_b)
    feat_cpu = ((c1 - c0) + (c3 - c2)) / (n_a + n_b)
    score_cpu = (c2 - c1) / n
    best_onnx = "onnx_int8" if "onnx_int8_mol_per_s" in engines else "onnx_fp32"
    out: dict[str, Any] = {
        "n": n,
        "score_mol_per_s": round(rep.mol_per_s, 1),
        "featurize_mol_per_s": round(featurize, 1),
        "ratio_score_to_featurize": round(rep.mol_per_s / featurize, 3),
        "onnx_vs_torch": round(engines[f"{best_onnx}_mol_per_s"] / engines["torch_mol_per_s"], 3),
        "peak_rss_mb": round(own, 1),
        "seconds": round(time.perf_counter() - t_all, 1),
        # details
        "onnx_variant": best_onnx,
        "onnx_fp32_vs_torch": round(engines["onnx_fp32_mol_per_s"] / engines["torch_mol_per_s"], 3),
        "model_threads": threads,
        **{k: round(v, 1) if k.endswith("_per_s") else v for k, v in engines.items()},
        "single_thread": {
            k: round(v, 1) if k.endswith("_per_s") else v for k, v in engines_1t.items()
        },
        "peak_rss_worker_mb": round(kids, 1),
        # CPU seconds per molecule are insensitive to other processes' load, unlike wall time:
        # their ratio is the throughput ratio both would have with the cores to themselves.
        "featurize_cpu_ms_per_mol": round(1e3 * feat_cpu, 3),
        "score_cpu_ms_per_mol": round(1e3 * score_cpu, 3),
        "ratio_score_to_featurize_cpu": round(feat_cpu / score_cpu, 3),
        "score_seconds": round(rep.seconds, 1),
        "featurize_molecules": n_a + n_b,
        "featurize_seconds": round(s_a + s_b, 1),
        "workers": workers,
        "chunk_size": chunk_size,
        "query_rows_per_model_call": int(len(q_x)),
        "support_rows": int(len(s_y)),
        "score_model": str(model_dir),
        "int8_model": str(int8_dir) if int8_model or model is None else "quantized on the fly",
        "distinct_smiles_in_pool": len(pool),
        "seed": seed,
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
    """The benchmark figures as a Markdown table."""
    lines = [
        f"# metascreen bench score (n = {r['n']:,})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| end-to-end scoring | {r['score_mol_per_s']:,.0f} mol/s ({r['score_seconds']} s) |",
        f"| featurization only ({r['workers']} workers, {r['featurize_molecules']:,} molecules) | {r['featurize_mol_per_s']:,.0f} mol/s |",
        f"| ratio scoring / featurization | {r['ratio_score_to_featurize']:.3f} |",
        f"| same ratio from CPU time per molecule ({r['featurize_cpu_ms_per_mol']:.2f} / {r['score_cpu_ms_per_mol']:.2f} ms) | {r['ratio_score_to_featurize_cpu']:.3f} |",
        f"| torch forward ({r['model_threads']} threads, {r['query_rows_per_model_call']} rows/call) | {r['torch_mol_per_s']:,.0f} mol/s |",
        f"| onnxruntime fp32 | {r['onnx_fp32_mol_per_s']:,.0f} mol/s ({r['onnx_fp32_vs_torch']:.2f}× torch) |",
    ]
    if "onnx_int8_mol_per_s" in r:
        lines.append(
            f"| onnxruntime int8 (dynamic quantization) | {r['onnx_int8_mol_per_s']:,.0f} mol/s ({r['onnx_int8_mol_per_s'] / r['torch_mol_per_s']:.2f}× torch) |"
        )
    st = r["single_thread"]
    lines += [
        f"| onnx_vs_torch ({r['onnx_variant']}) | {r['onnx_vs_torch']:.2f} |",
        f"| 1 thread: torch / fp32 / int8 | {st['torch_mol_per_s']:,.0f} / {st['onnx_fp32_mol_per_s']:,.0f} / {st.get('onnx_int8_mol_per_s', float('nan')):,.0f} mol/s |",
        f"| peak RSS: main process / largest worker | {r['peak_rss_mb']:,.0f} MB / {r['peak_rss_worker_mb']:,.0f} MB |",
        f"| wall time | {r['seconds']} s |",
        "",
        f"Library: {r['n']:,} SMILES sampled with replacement (seed {r['seed']}) from "
        f"{r['distinct_smiles_in_pool']:,} distinct bundled SMILES; model `{r['score_model']}`; "
        f"{r['cpu_count']} CPUs, {cpu_line(r)}, load average {r['loadavg_start']} at start, "
        f"{r['loadavg_end']} at end.",
        "",
    ]
    return "\n".join(lines)
