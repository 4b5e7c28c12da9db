"""Every command against hostile input and bad options: one ``error:`` line, exit 2, no traceback,
no partial output; or rows quarantined with counts that reconcile.

In-process through typer's ``CliRunner`` (fast); the signal and concurrency cases that need real
processes are in ``test_robustness_processes.py``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import typing
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cached_cli")]
runner = CliRunner()

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "data" / "library" / "support.csv"
LIBRARY = REPO / "data" / "library" / "library.csv"
MODEL = REPO / "data" / "artifacts" / "molecules-default-int8"  # small; same kind as the default
POLICY = REPO / "data" / "artifacts" / "policy-default"


def fails(args: list[object], *needles: object, absent: tuple[Path, ...] = ()) -> str:
    """Invoke; assert exit 2, exactly one ``error:`` line holding ``needles``, no traceback."""
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    for n in needles:
        assert str(n) in errors[0], errors[0]
    for p in absent:
        assert not p.exists(), f"{p} left behind by a failed run"
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Partial or temporary files (hidden names, ``.partial``) in ``folder``, lock files aside."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if (p.name.startswith(".") and not p.name.endswith(".lock")) or ".partial" in p.name
    )


# -- options, generically: every numeric and enum option of every command ----------------------
def _commands() -> Iterator[tuple[list[str], typing.Any]]:
    def walk(cmd: typing.Any, path: list[str]) -> Iterator[tuple[list[str], typing.Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(typer.main.get_command(app), [])


def _kinds(param: typing.Any) -> set[typing.Any]:
    ann = param.type_descriptor.annotation
    return set(typing.get_args(ann)) | {ann} - {type(None)}


def _option_cases() -> list[tuple[list[str], str, str]]:
    """(command path, option, bad value) for each bound and enum the app declares."""
    cases = []
    for path, cmd in _commands():
        for p in cmd.params:
            if not p.opts[0].startswith("--") or p.is_flag:
                continue
            kinds = _kinds(p)
            numeric = kinds & {int, float}
            if numeric:
                cases.append((path, p.opts[0], "x1"))  # not a number
                if p.min is not None:
                    cases.append((path, p.opts[0], str(p.min - 1)))
                if p.max is not None:
                    cases.append((path, p.opts[0], str(p.max + 1)))
            if any(typing.get_origin(k) is typing.Literal for k in kinds):
                cases.append((path, p.opts[0], "no-such-choice"))
    return cases


OPTION_CASES = _option_cases()


def test_every_numeric_option_declares_its_bounds() -> None:
    """New options cannot skip validation: each int/float option has a ``min`` (and seeds a max)."""
    missing = []
    for path, cmd in _commands():
        for p in cmd.params:
            if _kinds(p) & {int, float} and p.min is None and not p.count:
                missing.append(f"{' '.join(path)} {p.opts[0]}")
            if p.name in ("seed", "split_seed") and p.max is None:
                missing.append(f"{' '.join(path)} {p.opts[0]} (max)")
            if p.name == "device" and not any(
                typing.get_origin(k) is typing.Literal for k in _kinds(p)
            ):
                missing.append(f"{' '.join(path)} --device (choices)")
    assert not missing, missing
    assert len(OPTION_CASES) > 100  # the generic check covers the whole app


@pytest.mark.parametrize(
    ("path", "option", "value"),
    OPTION_CASES,
    ids=[f"{' '.join(c[0])} {c[1]}={c[2]}" for c in OPTION_CASES],
)
def test_option_out_of_bounds_fails_before_any_work(
    path: list[str], option: str, value: str, tmp_path: Path
) -> None:
    # Only the bad option is given: it is checked before the missing required arguments and
    # long before any file is read or any work starts.
    fails([*path, option, value], f"'{option}'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["simulate", "molecules", "D", "--budget", "4", "--batch", "8"], "--batch"),
        (["simulate", "molecules", "D", "--active-fraction", "0"], "--active-fraction"),
        (["train", "molecules", "D", "--lr", "0"], "--lr"),
        (["train", "molecules", "D", "--dropout", "1"], "--dropout"),
        (["train", "molecules", "D", "--support-sizes", "16,0"], "--support-sizes"),
        (["train", "molecules", "D", "--support-sizes", "a,b"], "--support-sizes"),
        (["train", "molecules", "D", "--hidden", "64,x"], "--hidden"),
        (["train", "molecules", "D", "--ensemble", "2", "--member-radii", "2"], "--member-radii"),
        (["train", "molecules", "D", "--ensemble", "2", "--member-radii", "2,9"], "--member-radii"),
        (["train", "movielens", "D", "--holdout-fraction", "1"], "--holdout-fraction"),
        (
            ["train", "policy", "D", "--out", "O", "--active-fractions", "0,0.5"],
            "--active-fractions",
        ),
        (
            ["train", "policy", "D", "--out", "O", "--warm-steps", "0", "--rl-steps", "0"],
            "--warm-steps",
        ),
        (["models", "gate", "C", "--valid-dir", "V", "--support-sizes", "0"], "--support-sizes"),
        (["models", "retrain", "D", "--max-minutes", "0"], "--max-minutes"),
    ],
)
def test_cross_option_and_open_bound_checks(args: list[str], option: str, tmp_path: Path) -> None:
    fails([tmp_path / a if a in ("D", "O", "C", "V") else a for a in args], f"'{option}'")


def test_usage_errors_are_one_line() -> None:
    fails(["score", "molecules", "--support", "S"], "--input")  # missing option
    fails(["evaluate", "molecules", "D", "--no-such-option"], "--no-such-option")
    fails(["no-such-command"], "no-such-command")


def test_output_that_is_also_the_input_is_refused(tmp_path: Path) -> None:
    lib = tmp_path / "lib.csv"
    shutil.copy(SUPPORT, lib)
    fails(
        ["score", "molecules", "--support", SUPPORT, "--input", lib, "--output", lib],
        "--output",
    )
    assert lib.read_bytes() == SUPPORT.read_bytes()
    fails(["propose", "--pool", lib, "--output", lib], "--output")
    fails(
        ["score", "movielens", "--ratings", lib, "--candidates", SUPPORT, "--output", lib,
         "--model", tmp_path],
        "--output",
    )  # fmt: skip
    assert lib.read_bytes() == SUPPORT.read_bytes()


def test_config_errors_name_the_option(tmp_path: Path) -> None:
    fails(["train", "molecules", tmp_path, "--learner", "bogus", "--out", tmp_path / "m"],
          "'--learner'", absent=(tmp_path / "m",))  # fmt: skip


# -- input files: every format the scoring commands accept --------------------------------------
def _write(path: Path, content: bytes | str | pd.DataFrame) -> Path:
    if isinstance(content, pd.DataFrame):
        content.to_parquet(path, index=False)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


CORRUPT_PARQUET = b"PAR1" + bytes(range(256)) * 2 + b"garbage"
BAD_INPUTS: dict[str, tuple[str, bytes | str | pd.DataFrame | None]] = {
    "missing.csv": ("no such file", None),
    "empty.csv": ("", b""),
    "empty.tsv": ("", b""),
    "empty.parquet": ("", b""),
    "empty.smi": ("no rows", b""),
    "empty.sdf": ("", b""),
    "header.csv": ("no rows", "SMILES,name\n"),
    "header.tsv": ("no rows", "SMILES\tname\n"),
    "header.parquet": ("no rows", pd.DataFrame({"SMILES": pd.Series([], dtype=str)})),
    "corrupt.parquet": ("", CORRUPT_PARQUET),
    "magic.parquet": ("", b"PAR1" + b"\x00" * 300),
    "latin1.csv": ("decode", "SMILES,name\nCCO,caf\xe9\n".encode("latin-1")),
    "latin1.tsv": ("decode", "SMILES\tname\nCCO\tcaf\xe9\n".encode("latin-1")),
    "latin1.smi": ("decode", "CCO caf\xe9\n".encode("latin-1")),
    "nosmiles.csv": ("no SMILES column", "name,value\na,1\n"),
    "nosmiles.parquet": ("no SMILES column", pd.DataFrame({"name": ["a"]})),
    "ragged.csv": ("", 'SMILES,name\nCCO,a\n"CCN,b\nCCC,c,d,e\n'),
    "binary.sdf": ("", bytes(range(256)) * 4),
    "library.xlsx": ("unsupported file type", b"PK\x03\x04"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_score_molecules_bad_library(name: str, tmp_path: Path) -> None:
    needle, content = BAD_INPUTS[name]
    lib = tmp_path / name
    if content is not None:
        _write(lib, content)
    out = tmp_path / "out" / "scores.parquet"
    msg = fails(
        [
            "score",
            "molecules",
            "--support",
            SUPPORT,
            "--input",
            lib,
            "--output",
            out,
            "--model",
            MODEL,
        ],
        lib,
        needle,
        absent=(out, out.with_name("scores.quarantine.csv")),
    )
    assert "error: " in msg
    if out.parent.exists():
        assert leftovers(out.parent) == []


@pytest.mark.parametrize(
    "name",
    [
        "missing.csv",
        "empty.csv",
        "header.csv",
        "corrupt.parquet",
        "latin1.csv",
        "nosmiles.csv",
        "library.xlsx",
    ],
)
def test_score_molecules_bad_support(name: str, tmp_path: Path) -> None:
    needle, content = BAD_INPUTS[name]
    sup = tmp_path / name
    if content is not None:
        _write(sup, content)
    out = tmp_path / "scores.parquet"
    fails(
        [
            "score",
            "molecules",
            "--support",
            sup,
            "--input",
            LIBRARY,
            "--output",
            out,
            "--model",
            MODEL,
        ],
        sup,
        absent=(out,),
    )


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("SMILES,label\nCCO,1\nCCN,maybe\n", ("row 2", "'label'", "maybe")),
        ("SMILES,label\nCCO,1\nCCN,\n", ("row 2", "'label'")),
        ("SMILES,label\nCCO,1\nCCN,1\n", ("both actives",)),
        ("SMILES,activity\nCCO,1\nCCN,0\n", ("no label column",)),
        ("SMILES,label\nCCO,1\nC1CC,0\n", ("invalid SMILES",)),
    ],
)
def test_score_molecules_bad_support_rows(
    content: str, needles: tuple[str, ...], tmp_path: Path
) -> None:
    sup = _write(tmp_path / "support.csv", content)
    out = tmp_path / "scores.parquet"
    fails(
        [
            "score",
            "molecules",
            "--support",
            sup,
            "--input",
            LIBRARY,
            "--output",
            out,
            "--model",
            MODEL,
        ],
        sup,
        *needles,
        absent=(out,),
    )


def test_score_molecules_nan_label_in_parquet_names_row_and_field(tmp_path: Path) -> None:
    sup = _write(
        tmp_path / "support.parquet",
        pd.DataFrame({"SMILES": ["CCO", "CCN", "CCC"], "label": [1.0, float("nan"), 0.0]}),
    )
    fails(
        [
            "score",
            "molecules",
            "--support",
            sup,
            "--input",
            LIBRARY,
            "--output",
            tmp_path / "o.parquet",
            "--model",
            MODEL,
        ],
        sup,
        "row 2",
        "'label'",
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".smi", ".sdf"])
def test_score_molecules_quarantines_bad_rows_and_counts_reconcile(
    suffix: str, tmp_path: Path
) -> None:
    """NaN, wrong types, invalid and duplicate SMILES: every row is scored or quarantined."""
    from rdkit import Chem

    smiles = ["CCO", "C1CC", "", "CCO", "c1ccccc1O", "nan", "123", "CC(=O)N", "Xx"]
    lib = tmp_path / f"lib{suffix}"
    if suffix == ".parquet":
        pd.DataFrame(
            {"SMILES": [*smiles[:-1], None], "value": [1.0, float("nan"), float("inf")] * 3}
        ).to_parquet(lib)
    elif suffix == ".smi":
        lib.write_text("".join(f"{s or 'C1CC'} m{i}\n" for i, s in enumerate(smiles)))
    elif suffix == ".sdf":
        blocks = []
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if s else None
            blocks.append(Chem.MolToMolBlock(mol) + "$$$$\n" if mol else "garbage\n\n$$$$\n")
        lib.write_text("".join(blocks))
    else:
        sep = "\t" if suffix == ".tsv" else ","
        lib.write_text(f"SMILES{sep}id\n" + "".join(f"{s}{sep}{i}\n" for i, s in enumerate(smiles)))
    out = tmp_path / "scores.parquet"
    res = runner.invoke(
        app,
        [
            "score",
            "molecules",
            "--support",
            str(SUPPORT),
            "--input",
            str(lib),
            "--output",
            str(out),
            "--model",
            str(MODEL),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    scored = pd.read_parquet(out)
    q_path = tmp_path / "scores.quarantine.csv"
    quarantined = pd.read_csv(q_path, keep_default_na=False) if q_path.exists() else pd.DataFrame()
    assert len(scored) + len(quarantined) == len(smiles)
    assert sorted([*scored["row"], *quarantined.get("row", [])]) == list(range(len(smiles)))
    assert (quarantined["reason"].str.len() > 0).all()
    assert (
        f"scored {len(scored)} / {len(smiles)} rows, quarantined {len(quarantined)}" in res.output
    )
    assert leftovers(tmp_path) == []


def test_worker_errors_reach_the_user_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error inside a forked featurizer is re-raised in the parent as one line."""
    from metascreen.models.serving import molecules as serving

    def boom(smiles: object) -> typing.NoReturn:
        raise RuntimeError("worker exploded")

    # used by the library featurizer only (not the support set's, in the parent); patched before
    # the pool forks, so the workers inherit it and nothing needs pickling
    monkeypatch.setattr(serving, "parse_smiles", boom)
    lib = tmp_path / "lib.csv"
    lib.write_text("SMILES\n" + "CCO\n" * 50)
    out = tmp_path / "scores.parquet"
    fails(
        [
            "score",
            "molecules",
            "--support",
            SUPPORT,
            "--input",
            lib,
            "--output",
            out,
            "--model",
            MODEL,
            "--chunk-size",
            "10",
        ],
        lib,
        "worker exploded",
        absent=(out,),
    )
    assert leftovers(tmp_path) == []


# -- model folders --------------------------------------------------------------------------------
def _model_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    def copy(name: str) -> Path:
        dst = tmp / name
        shutil.copytree(MODEL, dst)
        return dst

    tampered = copy("tampered")
    with open(tampered / "model.onnx", "ab") as fh:
        fh.write(b"\x00")
    bad_json = copy("bad-json")
    (bad_json / "metadata.json").write_text("{not json")
    listed = copy("list-json")
    (listed / "metadata.json").write_text("[1, 2]")
    no_onnx_field = copy("no-onnx-field")
    meta = json.loads((no_onnx_field / "metadata.json").read_text())
    del meta["onnx"]
    (no_onnx_field / "metadata.json").write_text(json.dumps(meta))
    no_meta = copy("no-meta")
    (no_meta / "metadata.json").unlink()
    no_graph = copy("no-graph")
    (no_graph / "model.onnx").unlink()
    as_file = tmp / "file-model"
    as_file.write_text("x")
    return {
        "missing": (tmp / "nowhere", "not found"),
        "a file": (as_file, "not found"),
        "wrong kind": (POLICY, "kind"),
        "tampered": (tampered, "sha256 differs"),
        "bad json": (bad_json, "not valid JSON"),
        "json list": (listed, "expected an object"),
        "no onnx field": (no_onnx_field, "'onnx'"),
        "no metadata": (no_meta, "metadata.json"),
        "no graph": (no_graph, "missing"),
    }


MODEL_CASES = ["missing", "a file", "wrong kind", "tampered", "bad json", "json list",
               "no onnx field", "no metadata", "no graph"]  # fmt: skip


@pytest.mark.parametrize("case", MODEL_CASES)
def test_bad_model_folders_for_every_command_that_reads_one(case: str, tmp_path: Path) -> None:
    model, needle = _model_cases(tmp_path)[case]
    out = tmp_path / "out"
    commands = [
        [
            "score",
            "molecules",
            "--support",
            SUPPORT,
            "--input",
            LIBRARY,
            "--output",
            out / "s.parquet",
            "--model",
            model,
        ],
        ["models", "quantize", model, "--out", out / "int8"],
        ["models", "register", model, "--registry", tmp_path / "reg"],
    ]
    if case != "wrong kind":  # a policy is a valid --policy; the rest apply to both kinds
        commands.append(
            ["propose", "--pool", LIBRARY, "--output", out / "p.csv", "--policy", model]
        )
    for args in commands:
        if args[0] == "propose":  # a predictor given as --policy is refused for its kind first
            fails(args, model)
        else:
            fails(args, model if case != "wrong kind" else "kind", needle)
        assert not out.exists() or not list(out.iterdir()), list(out.iterdir())
    assert not (tmp_path / "reg").exists() or not list((tmp_path / "reg").glob("*/v*"))


def test_export_refuses_the_wrong_kind_and_missing_folders(tmp_path: Path) -> None:
    fails(["export", POLICY, "--out", tmp_path / "e"], POLICY, "kind", absent=(tmp_path / "e",))
    fails(["export", tmp_path / "nowhere", "--out", tmp_path / "e"], "nowhere")


# -- FS-Mol task folders: evaluate, prepare, simulate, train read them the same way ------------
def _fsmol(tmp: Path, name: str) -> tuple[Path, str]:
    d = tmp / name
    d.mkdir()
    good = [json.dumps({"SMILES": s, "Property": f"{i % 2}.0"}) for i, s in
            enumerate(["CCO", "CCN", "CCC", "CCCl", "c1ccccc1", "CC(=O)O", "CCBr", "CCOC"])]  # fmt: skip
    blob = gzip.compress(("\n".join(good) + "\n").encode())
    f = d / "CHEMBL1.jsonl.gz"
    needle = str(f)
    if name == "truncated":
        f.write_bytes(blob[:-12])
    elif name == "not-gzip":
        f.write_text("\n".join(good))
    elif name == "bad-json":
        f.write_bytes(gzip.compress(b'{"SMILES": "CCO", "Property": "1.0"}\n{oops\n'))
        needle = f"{f} line 2"
    elif name == "not-an-object":
        f.write_bytes(gzip.compress(b'["CCO", 1]\n'))
        needle = f"{f} line 1"
    elif name == "missing-field":
        f.write_bytes(gzip.compress(b'{"smiles": "CCO", "Property": "1.0"}\n'))
        needle = "'SMILES'"
    elif name == "label-not-binary":
        f.write_bytes(gzip.compress(b'{"SMILES": "CCO", "Property": "2.5"}\n'))
        needle = "'Property'"
    elif name == "label-nan":
        f.write_bytes(gzip.compress(b'{"SMILES": "CCO", "Property": NaN}\n'))
        needle = "'Property'"
    elif name == "latin1":
        f.write_bytes(gzip.compress('{"SMILES": "CCO", "Property": "caf\xe9"}\n'.encode("latin-1")))
    elif name == "empty-folder":
        needle = "no '*.jsonl.gz' task files"
    elif name == "empty-file":
        f.write_bytes(b"")
        needle = str(d)
    else:
        f.write_bytes(blob)
    return d, needle


FSMOL_CASES = ["truncated", "not-gzip", "bad-json", "not-an-object", "missing-field",
               "label-not-binary", "label-nan", "latin1", "empty-folder", "empty-file"]  # fmt: skip


@pytest.mark.parametrize("case", FSMOL_CASES)
def test_bad_fsmol_folders(case: str, tmp_path: Path) -> None:
    data, needle = _fsmol(tmp_path, case)
    for args in (
        ["evaluate", "molecules", data, "--model", "knn", "--repeats", "1"],
        ["prepare", "molecules", data],
        ["simulate", "molecules", data, "--policy", "random", "--repeats", "1"],
    ):
        fails(args, needle)


def test_missing_fsmol_folder(tmp_path: Path) -> None:
    for args in (
        ["evaluate", "molecules", tmp_path / "nowhere", "--model", "knn"],
        ["prepare", "molecules", tmp_path / "nowhere"],
        ["simulate", "molecules", tmp_path / "nowhere", "--policy", "random"],
        [
            "models",
            "gate",
            MODEL,
            "--valid-dir",
            tmp_path / "nowhere",
            "--registry",
            tmp_path / "r",
        ],
    ):
        fails(args, "nowhere")


def test_evaluate_support_size_larger_than_every_task(tmp_path: Path) -> None:
    """Was: an empty ΔAUPRC of nan printed as a result (exit 0)."""
    data, _ = _fsmol(tmp_path, "ok")
    json_out = tmp_path / "r.json"
    fails(
        [
            "evaluate",
            "molecules",
            data,
            "--model",
            "knn",
            "--support-size",
            "8",
            "--json",
            json_out,
        ],
        "--support-size",
        "largest has",
        absent=(json_out,),
    )


def test_evaluate_no_valid_draw_is_an_error_not_nan(tmp_path: Path) -> None:
    d = tmp_path / "one-class"
    d.mkdir()
    rows = [json.dumps({"SMILES": s, "Property": "1.0"}) for s in ["CCO", "CCN", "CCC", "CCCl"]]
    (d / "T.jsonl.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    fails(["evaluate", "molecules", d, "--model", "knn", "--support-size", "2"], "--support-size")


# -- rating data: prepare / score / evaluate movielens -----------------------------------------
RATING_INPUTS: dict[str, tuple[str, bytes | str | pd.DataFrame]] = {
    "empty.csv": ("", b""),
    "header.csv": ("no rating rows", "user_id,item_id,rating\n"),
    "header.parquet": (
        "no rating rows",
        pd.DataFrame(
            {
                "user_id": pd.Series([], dtype=str),
                "item_id": pd.Series([], dtype=str),
                "rating": pd.Series([], dtype=float),
            }
        ),
    ),  # fmt: skip
    "corrupt.parquet": ("", CORRUPT_PARQUET),
    "latin1.csv": ("decode", "user_id,item_id,rating\n1,caf\xe9,4\n".encode("latin-1")),
    "nouser.csv": ("no user_id column", "item_id,rating\n2,4\n"),
    "mostly-bad.parquet": (
        "invalid",
        pd.DataFrame(
            {
                "user_id": ["1", "1", "2"],
                "item_id": ["1", "2", "3"],
                "rating": [float("inf"), float("nan"), 9.0],
            }
        ),
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(RATING_INPUTS))
def test_bad_rating_tables(name: str, tmp_path: Path) -> None:
    needle, content = RATING_INPUTS[name]
    ratings = _write(tmp_path / name, content)
    cands = _write(tmp_path / "cands.csv", "item_id\n1\n2\n")
    out = tmp_path / "top.parquet"
    fails(["prepare", "movielens", ratings], ratings, needle)
    if name.startswith("mostly-bad"):
        return  # scoring quarantines bad rating rows whatever their share (see below)
    # the inputs are checked before the model is opened: no model is needed to see these
    fails(
        [
            "score",
            "movielens",
            "--ratings",
            ratings,
            "--candidates",
            cands,
            "--output",
            out,
            "--model",
            tmp_path / "no-model",
        ],
        ratings,
        needle,
        absent=(out,),
    )


def test_a_table_without_ratings_is_implicit_feedback_and_says_so(tmp_path: Path) -> None:
    """No rating column: every row a positive (issue 34), flagged in prepare's JSON and logged."""
    table = _write(tmp_path / "clicks.csv", "user_id,item_id\n1,2\n1,3\n2,2\n")
    res = runner.invoke(app, ["prepare", "movielens", str(table)])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output[res.output.index("{") :])
    assert got["feedback"] == "implicit" and got["n_ratings"] == 3 and got["n_rejected"] == 0


def test_bad_candidates_and_missing_model(tmp_path: Path) -> None:
    ratings = _write(tmp_path / "r.csv", "user_id,item_id,rating\n1,2,4\n")
    out = tmp_path / "top.parquet"
    for name in ("corrupt.parquet", "empty.csv", "header.csv"):
        cands = _write(tmp_path / name, {"corrupt.parquet": CORRUPT_PARQUET, "empty.csv": b"",
                                         "header.csv": "item_id\n"}[name])  # fmt: skip
        fails(
            [
                "score",
                "movielens",
                "--ratings",
                ratings,
                "--candidates",
                cands,
                "--output",
                out,
                "--model",
                tmp_path / "m",
            ],
            cands,
            absent=(out,),
        )
    cands = _write(tmp_path / "c.csv", "item_id\n1\n")
    fails(
        [
            "score",
            "movielens",
            "--ratings",
            ratings,
            "--candidates",
            cands,
            "--output",
            out,
            "--model",
            tmp_path / "m",
        ],
        tmp_path / "m",
        absent=(out,),
    )
    fails(
        [
            "score",
            "movielens",
            "--ratings",
            ratings,
            "--candidates",
            cands,
            "--output",
            out,
            "--model",
            MODEL,
        ],
        MODEL,
        "kind",
        absent=(out,),
    )


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"ratings.dat": "1::2\n"}, "ratings.dat line 1"),
        ({"ratings.dat": ""}, "no rating rows"),
        ({"ratings.dat": "1::2::4\n", "users.dat": "1::M\n"}, "users.dat line 1"),
        ({"u.data": "1\t2\n"}, "u.data line 1"),
        ({"README": "x"}, "not a MovieLens folder"),
    ],
)
def test_bad_movielens_folders(files: dict[str, str], needle: str, tmp_path: Path) -> None:
    d = tmp_path / "ml"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text, encoding="latin-1")
    fails(["prepare", "movielens", d], needle)
    fails(["evaluate", "movielens", d, "--model", "item-mean", "--users", "holdout"], needle)


def test_rating_rows_are_quarantined_and_reconcile(tmp_path: Path) -> None:
    rows = [f"{u},{i},{(u + i) % 5 + 1}" for u in range(1, 11) for i in range(1, 11)]
    rows += ["1,1,3", "2,3,nan", "3,4,inf", "4,5,seven", ",6,3"]  # duplicate, NaN, inf, text, no id
    ratings = _write(tmp_path / "r.csv", "user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    res = runner.invoke(app, ["prepare", "movielens", str(ratings)])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output[: res.output.rindex("}") + 1])
    assert stats["n_rows"] == len(rows) == stats["n_ratings"] + stats["n_rejected"]
    assert stats["n_rejected"] == 5 == sum(stats["rejected_reasons"].values())


# -- propose ------------------------------------------------------------------------------------
def test_propose_bad_files(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    for name in ("corrupt.parquet", "header.csv", "latin1.csv", "nosmiles.csv", "missing.csv"):
        needle, content = BAD_INPUTS[name]
        pool = tmp_path / name
        if content is not None:
            _write(pool, content)
        fails(["propose", "--pool", pool, "--output", out], pool, absent=(out,))
    assayed = _write(tmp_path / "assayed.csv", "SMILES,label\nCCO,1\nCCN,high\n")
    fails(
        ["propose", "--pool", LIBRARY, "--assayed", assayed, "--output", out],
        assayed,
        "row 2",
        "'label'",
        absent=(out, tmp_path / "p.quarantine.csv"),
    )


def test_propose_with_nothing_left_leaves_no_quarantine(tmp_path: Path) -> None:
    pool = _write(tmp_path / "pool.csv", "SMILES\nC1CC\nXx\n")
    out = tmp_path / "p.csv"
    fails(["propose", "--pool", pool, "--output", out], pool, "no candidate left",
          absent=(out, tmp_path / "p.quarantine.csv"))  # fmt: skip


# -- registry commands --------------------------------------------------------------------------
def test_registry_commands_refuse_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASCREEN_REGISTRY", raising=False)
    reg = tmp_path / "reg"
    fails(["models", "promote", "molecules", "v0001"], "--registry")  # no registry configured
    fails(["models", "promote", "molecules", "v0001", "--registry", reg], "molecules")
    assert not reg.exists()  # a failed command creates nothing
    fails(["models", "rollback", "--registry", reg], "molecules")
    res = runner.invoke(app, ["models", "register", str(MODEL), "--registry", str(reg)])
    assert res.exit_code == 0, res.output
    fails(["models", "promote", "molecules", "v0009", "--registry", reg], "v0009", "v0001")
    fails(["models", "promote", "bad/name", "v0001", "--registry", reg], "bad/name")
    fails(["models", "rollback", "--registry", reg], "no earlier current version")
    res = runner.invoke(app, ["models", "promote", "molecules", "v0001", "--registry", str(reg)])
    assert res.exit_code == 0, res.output
    fails(["models", "gate", POLICY, "--valid-dir", tmp_path, "--registry", reg], "kind")
    # a registered file modified afterwards is refused by everything that resolves it
    with open(reg / "molecules" / "v0001" / "config.json", "a") as fh:
        fh.write(" ")
    out = tmp_path / "s.parquet"
    fails(
        [
            "score",
            "molecules",
            "--support",
            SUPPORT,
            "--input",
            LIBRARY,
            "--output",
            out,
            "--registry",
            reg,
        ],
        "config.json",
        "sha256 differs",
        absent=(out,),
    )
    fails(["models", "promote", "molecules", "v0001", "--registry", reg], "sha256 differs")
    decisions = (reg / "molecules" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(d)["action"] for d in decisions] == ["promote"]


def test_score_refuses_an_output_another_run_is_writing(tmp_path: Path) -> None:
    from metascreen.domains.io import exclusive_lock

    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous complete output")
    with exclusive_lock(out):
        fails(
            [
                "score",
                "molecules",
                "--support",
                SUPPORT,
                "--input",
                LIBRARY,
                "--output",
                out,
                "--model",
                MODEL,
            ],
            out,
            "another metascreen run",
        )
    assert out.read_bytes() == b"previous complete output"
