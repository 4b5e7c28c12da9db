"""Activity tables → FS-Mol-schema few-shot tasks, with FS-Mol's cleaning rules.

One row of the input is one measurement: an assay, a SMILES, a value with its relation and unit
(or a given binary label), and optionally the assay's target and target class. ``prepare_tasks``
turns such a table into one task per assay, following FS-Mol's preprocessing (Stanley et al.
2021, ``fs_mol/preprocessing/clean.py`` and ``utils/cleaning_utils.py``):

- units: concentrations become -log10(molar) (pXC50); each unit is converted by its own factor
  (M … fM, uM/µM included); ``%`` (inhibition) stays linear; any other unit is quarantined;
- relations are read with ChEMBL's quoting (``'='``); an empty relation reads as ``=``; the binary
  label ignores the relation, as in FS-Mol;
- SMILES are standardised with RDKit (parent fragment, neutralised, canonical) and molecules over
  ``max_mol_weight`` (900 Da) are quarantined;
- duplicates of one molecule in one assay: an exact repeat is merged; measurements that differ by
  more than 1 log unit (5 %-points for inhibition) are quarantined; the threshold is then FS-Mol's
  median rule; agreeing repeats are merged into their first row, repeats whose labels straddle
  the threshold are quarantined;
- a row is active when its value lies above the assay's threshold;
- an assay is kept with at least ``min_size`` (32) and at most ``max_size`` (5,000) rows and an
  active fraction within ``balance`` (30–70 %, FS-Mol's published selection).

Nothing is dropped silently: every input row is kept or listed in the quarantine with a reason,
and ``PrepareResult.summary`` reconciles the counts. No file is written here (``prepare_io``).
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.errors import ConfigError

logger = logging.getLogger(__name__)

# Molar factor of each concentration unit (ChEMBL's standard units and common spellings).
CONCENTRATION_UNITS: dict[str, float] = {
    "M": 1.0,
    "mM": 1e-3,
    "uM": 1e-6,
    "µM": 1e-6,
    "μM": 1e-6,
    "nM": 1e-9,
    "pM": 1e-12,
    "fM": 1e-15,
    "mol/L": 1.0,
    "mmol/L": 1e-3,
    "umol/L": 1e-6,
    "nmol/L": 1e-9,
    "pmol/L": 1e-12,
}
PERCENT_UNITS = frozenset({"%"})
RELATIONS = {"=": "=", "~": "~", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "<<": "<", ">>": ">"}
ENZYME_LIMITS = (5.0, 7.0)
OTHER_LIMITS = (4.0, 6.0)
DEFAULT_PX = 5.0
DEFAULT_PERCENT = 50.0
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, slots=True)
class Columns:
    """Which input column holds what; ``None`` = the table has no such column."""

    assay: str
    smiles: str
    value: str | None = None
    relation: str | None = None
    units: str | None = None
    label: str | None = None
    target: str | None = None
    target_class: str | None = None
    assay_type: str | None = None

    def present(self) -> dict[str, str]:
        """Role → column name for the roles this table has."""
        return {k: v for k, v in asdict(self).items() if v is not None}


CHEMBL_COLUMNS = Columns(
    assay="Assay ChEMBL ID",
    smiles="Smiles",
    value="Standard Value",
    relation="Standard Relation",
    units="Standard Units",
    target="Target ChEMBL ID",
    target_class="Target Class",
    assay_type="Assay Type",
)
"""A ChEMBL web export (``pChEMBL Value`` and ``Standard Type`` are read through ``Standard
Value``/``Standard Units``; FS-Mol's ``protein_class_desc`` is accepted for ``Target Class``)."""


@dataclass(frozen=True, slots=True)
class PrepareConfig:
    """Cleaning and selection rules (FS-Mol's defaults) and the split."""

    min_size: int = 32
    max_size: int = 5000
    balance: tuple[float, float] = (0.3, 0.7)
    max_mol_weight: float = 900.0
    conflict_log_units: float = 1.0
    conflict_percent: float = 5.0
    split: str = "target"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        """Refuse inconsistent values (each message names the field)."""
        lo, hi = self.balance
        checks = [
            (self.min_size >= 1, f"min_size must be at least 1, got {self.min_size}"),
            (self.max_size >= self.min_size, "max_size must be at least min_size"),
            (0.0 <= lo <= hi <= 1.0, f"balance must be 0 <= low <= high <= 1, got {self.balance}"),
            (self.max_mol_weight > 0, "max_mol_weight must be positive"),
            (self.split in ("target", "none"), f"split must be target or none, got {self.split!r}"),
            (
                len(self.fractions) == 3
                and all(f >= 0 for f in self.fractions)
                and math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6),
                f"fractions must be three non-negative numbers summing to 1, got {self.fractions}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(slots=True)
class PrepareResult:
    """Tasks (assay → FS-Mol rows), the quarantine (input columns + row + reason), the summary
    (``prepare.json``) and each kept assay's split (``train``/``valid``/``test`` or ``""``)."""

    tasks: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    summary: dict[str, Any]
    splits: dict[str, str] = field(default_factory=dict)


# -- per-row parsing -------------------------------------------------------------------------------
def clean_relation(text: object) -> str | None:
    """``'='``, ``"'>'"``, ``>=`` … → the relation; empty → ``=``; anything else → None."""
    s = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    s = s.strip().strip("'\"").strip()
    if not s:
        return "="
    return RELATIONS.get(s)


def unit_kind(unit: str) -> str | None:
    """``"conc"`` for a molar concentration unit, ``"pct"`` for %, None for anything else."""
    if unit in CONCENTRATION_UNITS:
        return "conc"
    if unit in PERCENT_UNITS:
        return "pct"
    return None


def px_from(value: float, unit: str) -> float:
    """-log10 of the molar concentration ``value`` ``unit`` (e.g. 41 nM → 7.387)."""
    return -math.log10(value * CONCENTRATION_UNITS[unit])


def _text(series: pd.Series) -> pd.Series:
    return series.astype(str).where(series.notna(), "").str.strip()


def _parse_rows(df: pd.DataFrame, cols: Columns) -> pd.DataFrame:
    """One frame of parsed fields per input row, with ``reason`` set for the rows that fail."""
    out = pd.DataFrame(index=df.index)
    out["row"] = np.arange(len(df))
    out["assay"] = _text(df[cols.assay])
    out["smiles_in"] = _text(df[cols.smiles])
    out["target"] = _text(df[cols.target]) if cols.target else ""
    out["target_class"] = _text(df[cols.target_class]) if cols.target_class else ""
    out["assay_type"] = _text(df[cols.assay_type]) if cols.assay_type else ""
    out["reason"] = ""
    out.loc[out["assay"] == "", "reason"] = f"empty assay ({cols.assay!r})"
    if cols.label is not None:
        _parse_labels(df[cols.label], out, cols.label)
    else:
        _parse_values(df, out, cols)
    return out


def _parse_labels(col: pd.Series, out: pd.DataFrame, name: str) -> None:
    text = _text(col).str.lower()
    lab = text.map({"1": 1.0, "1.0": 1.0, "true": 1.0, "active": 1.0, "0": 0.0, "0.0": 0.0})
    lab = lab.where(~text.isin(["false", "inactive"]), 0.0)
    out["label"] = lab
    out["kind"] = "label"
    out["metric"], out["value"], out["unit"], out["relation"] = np.nan, np.nan, "", "="
    bad = lab.isna() & (out["reason"] == "")
    out.loc[bad, "reason"] = (
        f"label is not binary ({name!r}: "
        + _text(col)[bad].map(repr)
        + "; 1/0, true/false, active/inactive)"
    )


def _parse_values(df: pd.DataFrame, out: pd.DataFrame, cols: Columns) -> None:
    assert cols.value is not None
    assert cols.units is not None
    out["value"] = pd.to_numeric(_text(df[cols.value]), errors="coerce")
    out["unit"] = _text(df[cols.units])
    rel_in = df[cols.relation] if cols.relation else pd.Series("", index=df.index)
    out["relation"] = rel_in.map(clean_relation)
    out["kind"] = out["unit"].map(unit_kind)
    out["label"] = np.nan

    def fail(mask: pd.Series, reason: pd.Series | str) -> None:
        m = mask & (out["reason"] == "")
        out.loc[m, "reason"] = reason[m] if isinstance(reason, pd.Series) else reason

    fail(
        out["value"].isna(),
        f"value is not a number ({cols.value!r}: " + _text(df[cols.value]).map(repr) + ")",
    )
    fail(out["relation"].isna(), "unknown relation (" + rel_in.astype(str) + ")")
    fail(
        out["kind"].isna(),
        "unit is neither a molar concentration nor % (" + out["unit"].map(repr) + ")",
    )
    conc = out["kind"] == "conc"
    fail(conc & ~(out["value"] > 0), "concentration is not positive")
    px = np.full(len(out), np.nan)
    ok = (conc & (out["reason"] == "")).to_numpy()
    factors = out.loc[ok, "unit"].map(CONCENTRATION_UNITS).to_numpy(np.float64)
    px[ok] = -np.log10(out.loc[ok, "value"].to_numpy(np.float64) * factors)
    out["metric"] = np.where(out["kind"] == "pct", out["value"], px)


# -- SMILES ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 18)
def standardize_smiles(smiles: str) -> tuple[str | None, float, str]:
    """(canonical SMILES of the neutralised parent fragment, its molecular weight, reason).

    The canonical SMILES is None when RDKit cannot parse or standardise ``smiles`` (then
    ``reason`` says why).
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdMolDescriptors
    from rdkit.Chem.MolStandardize import rdMolStandardize

    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]  # failures become reasons

    if not smiles:
        return None, math.nan, "empty SMILES"
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None, math.nan, "RDKit could not parse the SMILES"
    try:
        parent = rdMolStandardize.ChargeParent(mol)
        canon = Chem.MolToSmiles(parent)
    except (ValueError, RuntimeError) as err:  # RDKit's standardiser raises on odd valences
        return None, math.nan, f"RDKit could not standardise the SMILES ({err})"
    if not canon:
        return None, math.nan, "no molecule left after standardisation"
    return canon, float(rdMolDescriptors._CalcMolWt(parent)), ""


def _standardize_many(smiles: list[str]) -> list[tuple[str | None, float, str]]:
    return [standardize_smiles(s) for s in smiles]


def _standardize_column(out: pd.DataFrame, workers: int) -> None:
    """Add ``smiles`` and ``mw`` (each distinct input SMILES is standardised once)."""
    unique = sorted(set(out.loc[out["reason"] == "", "smiles_in"]))
    if workers > 1 and len(unique) > 2000:
        from metascreen.domains.parallel import fork_pool

        chunks = [unique[i : i + 1000] for i in range(0, len(unique), 1000)]
        with fork_pool(workers) as pool:
            results = [r for part in pool.map(_standardize_many, chunks) for r in part]
    else:
        results = _standardize_many(unique)
    table = dict(zip(unique, results, strict=True))
    std = out["smiles_in"].map(lambda s: table.get(s, (None, math.nan, "")))
    out["smiles"] = std.map(lambda t: t[0])
    out["mw"] = std.map(lambda t: t[1])
    bad = out["smiles"].isna() & (out["reason"] == "")
    out.loc[bad, "reason"] = std[bad].map(lambda t: t[2])


# -- per-assay rules ------------------------------------------------------------------------------
def is_enzyme(classes: Sequence[str]) -> bool:
    """FS-Mol's test: some target-class text of the assay contains "enzyme" or "ase"."""
    return any("enzyme" in c.lower() or "ase" in c.lower() for c in classes if c)


def threshold_rule(metric: np.ndarray, kind: str, enzyme: bool) -> tuple[float, str]:
    """FS-Mol's median rule: (threshold, the rule in words).

    Concentrations (pXC50): the median if it lies in 5–7 for enzymes (4–6 otherwise), else 5.
    % inhibition: the median if it is at least 50, else 50.
    """
    median = float(np.median(metric))
    if kind == "pct":
        if median >= DEFAULT_PERCENT:
            return median, f"median {median:.4g} % (at least 50 %)"
        return DEFAULT_PERCENT, f"fixed 50 % (median {median:.4g} % below 50 %)"
    lo, hi = ENZYME_LIMITS if enzyme else OTHER_LIMITS
    who = "enzyme target" if enzyme else "non-enzyme target"
    if lo <= median <= hi:
        return median, f"median pXC50 {median:.4g} ({who}: within {lo:g}–{hi:g})"
    return DEFAULT_PX, f"fixed pXC50 5 (median {median:.4g} outside {lo:g}–{hi:g}, {who})"


def _alive(out: pd.DataFrame) -> pd.Series:
    return out["reason"] == ""


def _mixed_kinds(out: pd.DataFrame) -> None:
    """Rows whose unit kind differs from their assay's majority kind are quarantined."""
    alive = out[_alive(out)]
    major = alive.groupby("assay")["kind"].agg(lambda k: k.value_counts().index[0])
    want = out["assay"].map(major)
    odd = _alive(out) & want.notna() & (out["kind"] != want)
    names = {"conc": "molar concentration", "pct": "%"}
    out.loc[odd, "reason"] = (
        "unit kind differs from the assay's ("
        + out.loc[odd, "unit"].map(repr)
        + " in an assay of "
        + want[odd].map(names)
        + " values)"
    )


def _first_rows(out: pd.DataFrame, mask: pd.Series, keys: list[str]) -> pd.Series:
    """For the rows in ``mask``, the input row of the first row with the same ``keys``."""
    sub = out.loc[mask, [*keys, "row"]]
    return sub.groupby(keys, sort=False)["row"].transform("min")


def _live_duplicates(out: pd.DataFrame, alive: pd.Series, keys: list[str]) -> pd.Series:
    """Live rows that repeat an earlier live row's ``keys`` (quarantined rows never count)."""
    dup = pd.Series(False, index=out.index)
    dup[alive] = out.loc[alive].duplicated(keys, keep="first")
    return dup


def _exact_duplicates(out: pd.DataFrame) -> None:
    alive = _alive(out)
    key = out["metric"].where(out["kind"] != "label", out["label"])
    out["_key"] = key
    dup = _live_duplicates(out, alive, ["assay", "smiles", "_key"])
    first = _first_rows(out, alive, ["assay", "smiles", "_key"])
    out.loc[dup, "reason"] = (
        "duplicate of row " + first[dup].astype(str) + " (same molecule, same value)"
    )
    out.drop(columns="_key", inplace=True)


def _far_conflicts(out: pd.DataFrame, cfg: PrepareConfig) -> None:
    """Repeats of a molecule in an assay that differ by more than the tolerance: quarantined."""
    alive = _alive(out)
    key = out["metric"].where(out["kind"] != "label", out["label"])
    grp = key[alive].groupby([out.loc[alive, "assay"], out.loc[alive, "smiles"]])
    spread = grp.transform("max") - grp.transform("min")
    tol = out.loc[alive, "kind"].map({"conc": cfg.conflict_log_units, "pct": cfg.conflict_percent})
    tol = tol.fillna(0.0)  # given labels: any difference conflicts
    bad = spread > tol
    idx = bad[bad].index
    if len(idx) == 0:
        return
    lo, hi = grp.transform("min")[idx], grp.transform("max")[idx]
    what = out.loc[idx, "kind"].map(
        {
            "conc": f"pXC50 differ by more than {cfg.conflict_log_units:g}",
            "pct": f"% values differ by more than {cfg.conflict_percent:g}",
            "label": "labels differ",
        }
    )
    out.loc[idx, "reason"] = (
        "conflicting measurements of one molecule in the assay ("
        + lo.round(3).astype(str)
        + " to "
        + hi.round(3).astype(str)
        + ": "
        + what
        + ")"
    )


def _thresholds(out: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Label the live value rows by their assay's threshold; return assay → value and rule."""
    alive = _alive(out) & (out["kind"] != "label")
    found: dict[str, dict[str, Any]] = {}
    for assay, g in out[alive].groupby("assay", sort=True):
        kind = str(g["kind"].iloc[0])
        thr, rule = threshold_rule(
            g["metric"].to_numpy(np.float64), kind, is_enzyme(list(g["target_class"].unique()))
        )
        found[str(assay)] = {"value": round(thr, 6), "rule": rule}
        out.loc[g.index, "label"] = (g["metric"] > thr).astype(np.float64)
        out.loc[g.index, "threshold"] = thr
    return found


def _merge_repeats(out: pd.DataFrame) -> None:
    """Agreeing repeats merge into their first row; repeats with both labels are quarantined."""
    alive = _alive(out)
    grp = out.loc[alive, "label"].groupby([out.loc[alive, "assay"], out.loc[alive, "smiles"]])
    n_labels = grp.transform("nunique")
    straddle = n_labels[n_labels > 1].index
    if len(straddle):
        thr = out.loc[straddle, "threshold"].round(3).astype(str)
        out.loc[straddle, "reason"] = (
            "conflicting labels of one molecule in the assay (its values straddle the threshold "
            + thr
            + ")"
        )
    alive = _alive(out)
    dup = _live_duplicates(out, alive, ["assay", "smiles"])
    first = _first_rows(out, alive, ["assay", "smiles"])
    out.loc[dup, "reason"] = (
        "duplicate of row " + first[dup].astype(str) + " (agreeing label; merged)"
    )


def _measurements(out: pd.DataFrame) -> pd.DataFrame:
    """Per assay, the live measurements and their active fraction (repeats counted, as FS-Mol
    counts an assay's size and balance)."""
    return out[_alive(out)].groupby("assay")["label"].agg(["size", "mean"])


def _assay_filters(out: pd.DataFrame, cfg: PrepareConfig, stats: pd.DataFrame) -> dict[str, str]:
    """Drop assays outside the size and balance limits (``stats``: ``_measurements``); return
    assay → reason."""
    alive = _alive(out)
    dropped: dict[str, str] = {}
    lo, hi = cfg.balance
    for assay, (n, frac) in stats.iterrows():
        if n < cfg.min_size:
            dropped[str(assay)] = f"{int(n)} measurements, fewer than --min-size {cfg.min_size}"
        elif n > cfg.max_size:
            dropped[str(assay)] = f"{int(n)} measurements, more than --max-size {cfg.max_size}"
        elif not lo <= frac <= hi:
            dropped[str(assay)] = f"active fraction {frac:.3f} outside --balance {lo:g}–{hi:g}"
    for assay in sorted(set(out["assay"]) - set(out.loc[alive, "assay"]) - {""}):
        dropped[str(assay)] = "no usable rows"
    if dropped:
        m = alive & out["assay"].isin(dropped)
        out.loc[m, "reason"] = "assay dropped: " + out.loc[m, "assay"].map(dropped)
    return dropped


# -- output ---------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else repr(float(x))


def _task_rows(g: pd.DataFrame) -> pd.DataFrame:
    """FS-Mol's fields for one assay's kept rows (strings, as in FS-Mol's files).

    ``RegressionProperty`` is the value in nM for concentrations (% for inhibition) and
    ``LogRegressionProperty`` the pXC50; for % rows it is FS-Mol's -log10(value · 1e-9), kept
    so that FS-Mol's own tools read the files unchanged (it means nothing for a percentage).
    """
    kind = g["kind"].to_numpy()
    value = g["value"].to_numpy(np.float64)
    factor = g["unit"].map(CONCENTRATION_UNITS).to_numpy(np.float64)
    reg = np.where(kind == "conc", value * factor / 1e-9, value)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_log = -np.log10(value * 1e-9)
    logreg = np.where(kind == "conc", g["metric"].to_numpy(np.float64), pct_log)
    return pd.DataFrame(
        {
            "SMILES": g["smiles"].to_numpy(),
            "Property": np.where(g["label"].to_numpy() > 0.5, "1.0", "0.0"),
            "Assay_ID": g["assay"].to_numpy(),
            "RegressionProperty": [_fmt(v) for v in reg],
            "LogRegressionProperty": [_fmt(v) for v in logreg],
            "Relation": g["relation"].to_numpy(),
            "AssayType": g["assay_type"].to_numpy(),
            "row": g["row"].to_numpy(),
        }
    )


def split_by_target(
    groups: dict[str, str], fractions: Sequence[float], seed: int
) -> dict[str, str]:
    """Assay → ``train``/``valid``/``test``, whole targets at a time (FS-Mol's principle).

    ``groups`` maps each assay to its target (an assay without one is its own group). Targets
    are shuffled with ``seed``; test, then valid, take targets until they hold their fraction of
    the assays, train takes the rest. A split with a positive fraction gets at least one target
    while the others keep one.
    """
    by_target: dict[str, list[str]] = {}
    for assay, target in sorted(groups.items()):
        by_target.setdefault(target, []).append(assay)
    targets = sorted(by_target)
    order = [targets[i] for i in np.random.default_rng(seed).permutation(len(targets))]
    total = len(groups)
    want = {"test": fractions[2] * total, "valid": fractions[1] * total}
    out: dict[str, str] = {}
    pos = 0
    for name in ("test", "valid"):
        got = 0
        while pos < len(order) - 1 and want[name] > 0 and (got == 0 or got < want[name] - 0.5):
            if got + len(by_target[order[pos]]) > want[name] + 0.5 and got > 0:
                break
            for assay in by_target[order[pos]]:
                out[assay] = name
            got += len(by_target[order[pos]])
            pos += 1
    for target in order[pos:]:
        for assay in by_target[target]:
            out[assay] = "train"
    return out


def _quarantine_frame(df: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    bad = (out["reason"] != "").to_numpy()
    q = df.loc[bad].copy()
    q.columns = [f"{c} (input)" if c in ("row", "reason") else c for c in q.columns]
    q.insert(0, "row", out.loc[bad, "row"].to_numpy())
    q["reason"] = out.loc[bad, "reason"].to_numpy()
    return q.reset_index(drop=True)


def reason_kind(reason: str) -> str:
    """The kind of a quarantine reason: its text before any detail, numbers as N."""
    return re.sub(r"\d+", "N", reason.split(" (")[0].split(":")[0]).strip()


def _split_stats(
    out: pd.DataFrame, tasks: dict[str, pd.DataFrame], splits: dict[str, str]
) -> dict[str, dict[str, int]]:
    target = out.groupby("assay")["target"].first()
    stats = {s: {"assays": 0, "targets": 0, "rows": 0} for s in SPLITS}
    seen: dict[str, set[str]] = {s: set() for s in SPLITS}
    for assay, rows in tasks.items():
        s = splits[assay]
        stats[s]["assays"] += 1
        stats[s]["rows"] += len(rows)
        seen[s].add(str(target.get(assay, "")) or f"assay:{assay}")
    for s in SPLITS:
        stats[s]["targets"] = len(seen[s])
    return stats


def _summary(
    out: pd.DataFrame,
    tasks: dict[str, pd.DataFrame],
    dropped: dict[str, str],
    thresholds: dict[str, dict[str, Any]],
    splits: dict[str, str],
    cols: Columns,
    cfg: PrepareConfig,
) -> dict[str, Any]:
    kept = sum(len(t) for t in tasks.values())
    reasons = out.loc[out["reason"] != "", "reason"].map(reason_kind).value_counts()
    split_stats = _split_stats(out, tasks, splits) if cfg.split == "target" else {}
    cfg_json = asdict(cfg)
    cfg_json.pop("workers")
    return {
        "rows_in": len(out),
        "rows_kept": kept,
        "rows_quarantined": int((out["reason"] != "").sum()),
        "assays_kept": len(tasks),
        "assays_dropped": dict(sorted(dropped.items())),
        "thresholds": {a: thresholds[a] for a in sorted(thresholds)},  # dropped assays too
        "actives": int(sum((t["Property"] == "1.0").sum() for t in tasks.values())),
        "quarantine_reasons": {str(k): int(v) for k, v in reasons.items()},
        "splits": split_stats,
        "columns": cols.present(),
        "config": cfg_json,
    }


def prepare_tasks(
    df: pd.DataFrame, columns: Columns | None = None, config: PrepareConfig | None = None
) -> PrepareResult:
    """Turn an activity table (one measurement per row) into FS-Mol-schema tasks.

    ``columns`` says which column holds what (default: a ChEMBL web export's names). Returns the
    tasks (assay → rows with FS-Mol's fields plus ``row``, the 0-based input row), the quarantine
    (the input row's columns + ``row`` + ``reason``), the summary and the splits. Every input
    row is in exactly one task or the quarantine: ``rows_in = rows_kept + rows_quarantined``.
    """
    cols = columns or CHEMBL_COLUMNS
    cfg = config or PrepareConfig()
    df = df.reset_index(drop=True)
    out = _parse_rows(df, cols)
    _standardize_column(out, cfg.workers)
    heavy = _alive(out) & (out["mw"] > cfg.max_mol_weight)
    out.loc[heavy, "reason"] = (
        f"molecular weight above {cfg.max_mol_weight:g} ("
        + out.loc[heavy, "mw"].round(1).astype(str)
        + " of the standardised parent)"
    )
    out["threshold"] = np.nan
    _mixed_kinds(out)
    _exact_duplicates(out)
    _far_conflicts(out, cfg)
    thresholds = _thresholds(out)
    stats = _measurements(out)
    _merge_repeats(out)
    dropped = _assay_filters(out, cfg, stats)
    tasks = {
        str(a): _task_rows(g).reset_index(drop=True)
        for a, g in out[_alive(out)].groupby("assay", sort=True)
    }
    splits: dict[str, str] = {a: "" for a in tasks}
    if cfg.split == "target":
        first = out[_alive(out)].groupby("assay")["target"].first()
        groups = {a: (first[a] or f"assay:{a}") for a in tasks}
        splits = split_by_target(groups, cfg.fractions, cfg.seed)
    summary = _summary(out, tasks, dropped, thresholds, splits, cols, cfg)
    if summary["rows_kept"] + summary["rows_quarantined"] != summary["rows_in"]:
        raise AssertionError("prepare: rows do not reconcile (a bug)")
    logger.info(
        "prepared %d rows: %d kept in %d assays, %d quarantined, %d assays dropped",
        summary["rows_in"],
        summary["rows_kept"],
        len(tasks),
        summary["rows_quarantined"],
        len(dropped),
    )
    return PrepareResult(tasks, _quarantine_frame(df, out), summary, splits)


def with_overrides(base: Columns, **names: str | None) -> Columns:
    """``base`` with the given roles renamed (None leaves a role as it is)."""
    return replace(base, **{k: v for k, v in names.items() if v is not None})
