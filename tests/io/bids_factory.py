"""Small valid BIDS datasets built on the fly, and the corpus of malformed ones.

(Imported by ``tests/io/conftest.py`` and, by file path, by ``tests/cli/test_malformed.py``.)

``make_bids(tmp_path, n_subjects=3, **mutations)`` writes a tiny valid dataset (4x4x3 voxels,
2 b=0 + 2 shells x 6 directions, participants.tsv with score/age/sex); each keyword mutation
breaks one thing (see :func:`make_bids`). :data:`MALFORMED` lists the corpus of broken datasets
that ``tests/io/test_bids_malformed.py`` and ``tests/cli/test_malformed.py`` both run.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

SHAPE = (4, 4, 3)
SEED = 20251125


def scheme(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """2 b=0 volumes then 6 directions at b=1000 and 6 at b=2000 s/mm^2 (unit vectors)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(12, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bvals = np.array([0, 5] + [1000] * 6 + [2000] * 6, dtype=float)
    bvecs = np.vstack([np.zeros((2, 3)), dirs])
    return bvals, bvecs


def dwi_data(seed: int, bvals: np.ndarray, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Mono-exponential signal with noise, positive float32."""
    rng = np.random.default_rng(seed)
    s0 = rng.uniform(800, 1200, size=shape)
    adc = rng.uniform(0.5e-3, 1.5e-3, size=shape)
    sig = s0[..., None] * np.exp(-np.asarray(bvals) * adc[..., None])
    return (sig + rng.normal(0, 5, size=sig.shape)).clip(1).astype(np.float32)


def fmt_bvals(bvals: np.ndarray) -> str:
    return " ".join(f"{b:g}" for b in bvals) + "\n"


def fmt_bvecs(bvecs: np.ndarray) -> str:
    """FSL layout: 3 rows, one column per volume."""
    return "\n".join(" ".join(f"{v:.6f}" for v in row) for row in np.asarray(bvecs).T) + "\n"


def save(data: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return path


def participants_text(labels: Iterable[str], columns: Mapping[str, list[Any]]) -> str:
    labels = list(labels)
    names = ["participant_id", *columns]
    lines = ["\t".join(names)]
    for i, lab in enumerate(labels):
        lines.append("\t".join([f"sub-{lab}"] + [str(columns[c][i]) for c in columns]))
    return "\n".join(lines) + "\n"


def make_bids(
    tmp_path: Path,
    n_subjects: int = 3,
    *,
    name: str = "bids",
    sessions: Iterable[str] | None = None,
    t1w: bool = False,
    gz: bool = True,
    bval: str | None = None,
    bvec: str | None = None,
    dwi: np.ndarray | None = None,
    dwi_bytes: Callable[[bytes], bytes] | None = None,
    t1w_bytes: Callable[[bytes], bytes] | None = None,
    columns: Mapping[str, list[Any]] | None = None,
    participants: str | None | bool = True,
    extra_labels: Iterable[str] = (),
    drop: Iterable[str] = (),
    add: Mapping[str, str] | None = None,
) -> Path:
    """Write a small valid BIDS dataset below ``tmp_path / name``, then apply mutations.

    Subjects are ``sub-01`` ... ``sub-<n>``; every mutation targets ``sub-01``.

    Parameters
    ----------
    sessions
        Session labels (every subject gets each session); None = no session level.
    t1w
        Also write ``anat/*_T1w.nii.gz``.
    gz
        ``.nii.gz`` (True) or ``.nii`` images.
    bval, bvec
        Replace sub-01's ``.bval`` / ``.bvec`` text.
    dwi
        Replace sub-01's DWI data (e.g. a 3-D array or one with NaN).
    dwi_bytes, t1w_bytes
        Rewrite sub-01's DWI / T1w file bytes (truncate, corrupt).
    columns
        Override or add participants.tsv columns (one value per subject, in label order).
    participants
        True: write participants.tsv; False: no file; a string: this exact content.
    extra_labels
        Extra participants.tsv rows (labels without images).
    drop
        Paths (relative to the dataset) removed at the end.
    add
        Extra text files to write, relative path -> content.
    """
    root = tmp_path / name
    root.mkdir(parents=True)
    labels = [f"{i:02d}" for i in range(1, n_subjects + 1)]
    ext = ".nii.gz" if gz else ".nii"
    bvals, bvecs = scheme()
    for k, lab in enumerate(labels):
        for ses in (list(sessions) if sessions else [None]):
            prefix = f"sub-{lab}" + (f"_ses-{ses}" if ses else "")
            folder = root / f"sub-{lab}" / (f"ses-{ses}" if ses else "")
            d = folder / "dwi"
            data = dwi_data(SEED + k, bvals)
            first = k == 0
            if first and dwi is not None:
                data = dwi
            dwi_path = save(data, d / f"{prefix}_dwi{ext}")
            (d / f"{prefix}_dwi.bval").write_text(bval if first and bval is not None
                                                  else fmt_bvals(bvals))
            (d / f"{prefix}_dwi.bvec").write_text(bvec if first and bvec is not None
                                                  else fmt_bvecs(bvecs))
            (d / f"{prefix}_dwi.json").write_text('{"EchoTime": 0.08}\n')
            if first and dwi_bytes is not None:
                dwi_path.write_bytes(dwi_bytes(dwi_path.read_bytes()))
            if t1w:
                t1 = np.random.default_rng(SEED + 100 + k).uniform(0, 1000, SHAPE)
                t1_path = save(t1.astype(np.float32), folder / "anat" / f"{prefix}_T1w{ext}")
                if first and t1w_bytes is not None:
                    t1_path.write_bytes(t1w_bytes(t1_path.read_bytes()))
    (root / "dataset_description.json").write_text(
        '{"Name": "microvba test", "BIDSVersion": "1.9.0"}\n')
    rng = np.random.default_rng(SEED)
    cols: dict[str, list[Any]] = {
        "score": [round(float(x), 1) for x in rng.normal(60, 10, n_subjects)],
        "age": [int(x) for x in rng.integers(20, 60, n_subjects)],
        "sex": [["M", "F"][i % 2] for i in range(n_subjects)],
    }
    cols.update(columns or {})
    all_labels = labels + list(extra_labels)
    for c in cols:
        cols[c] = list(cols[c]) + ["n/a"] * (len(all_labels) - len(cols[c]))
    if participants is True:
        (root / "participants.tsv").write_text(participants_text(all_labels, cols))
    elif isinstance(participants, str):
        (root / "participants.tsv").write_text(participants)
    for rel, text in (add or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel in drop:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return root


# ---------------------------------------------------------------------------------------------
# the corpus of malformed datasets


def _bvals_with(**changes: float) -> str:
    b, _ = scheme()
    for i, v in changes.items():
        b[int(i[1:])] = v
    return fmt_bvals(b)


def _bvecs_with(index: int, vector: tuple[float, float, float]) -> str:
    _, g = scheme()
    g[index] = vector
    return fmt_bvecs(g)


def _truncate(fraction: float) -> Callable[[bytes], bytes]:
    return lambda raw: raw[: int(len(raw) * fraction)]


def _truncated_gzip_data(raw: bytes) -> bytes:
    """A .nii.gz whose decompressed stream ends in the middle of the image data."""
    inner = gzip.decompress(raw)
    return gzip.compress(inner[: len(inner) - 200])


@dataclass(frozen=True)
class Case:
    """One malformed dataset: how to build it, what the run must say."""

    mutations: dict[str, Any] = field(default_factory=dict)
    file: str = "sub-01_dwi"  # a part of the offending file's name, printed in the error
    match: str = ""  # regex the message must match
    level: str = "participant"  # the BIDS-App stage to run
    args: tuple[str, ...] = ()  # extra CLI arguments
    score: str | None = None  # validate_dataset arguments
    covariates: tuple[str, ...] = ()
    participant_label: tuple[str, ...] | None = None
    path: str | None = None  # BIDS_DIR relative to tmp_path when not the built dataset

    @property
    def cli_args(self) -> list[str]:
        extra = [*self.args, "--n-jobs", "1"]  # serial: no Dask cluster to start and stop
        if self.score:
            extra += ["--score", self.score]
        if self.covariates:
            extra += ["--covariates", ",".join(self.covariates)]
        if self.participant_label:
            extra += ["--participant-label", *self.participant_label]
        if self.level == "participant":
            extra.append("--skip-normalise")
        return extra


_GROUP = {"level": "group", "score": "score", "covariates": ("age", "sex")}

MALFORMED: dict[str, Case] = {
    "wrong_path": Case(path="does_not_exist", file="does_not_exist", match="does not exist"),
    "empty_folder": Case(path="empty", file="empty", match="empty"),
    "no_subject_folder": Case(path="nosub", file="nosub", match="no sub-<label> folder"),
    "bval_count": Case({"bval": fmt_bvals(scheme()[0][:-1])}, "sub-01_dwi.bval", "disagree"),
    "bvec_columns": Case({"bvec": fmt_bvecs(scheme()[1][:-1])}, "sub-01_dwi.bvec",
                         "disagree"),
    "volume_count": Case({"dwi": dwi_data(1, scheme()[0])[..., :-2]}, "sub-01_dwi.nii.gz",
                         "disagree"),
    "bvec_two_rows": Case({"bvec": "\n".join(fmt_bvecs(scheme()[1]).splitlines()[:2])},
                          "sub-01_dwi.bvec", "3 rows"),
    "bvec_four_rows": Case({"bvec": fmt_bvecs(scheme()[1]) + " ".join(["0"] * 14) + "\n"},
                           "sub-01_dwi.bvec", "3 rows"),
    "bvec_zero_for_b1000": Case({"bvec": _bvecs_with(3, (0.0, 0.0, 0.0))}, "sub-01_dwi.bvec",
                                r"zero or non-unit.*volumes 3 \(b=1000"),
    "bvec_not_unit": Case({"bvec": _bvecs_with(9, (0.5, 0.0, 0.0))}, "sub-01_dwi.bvec",
                          r"non-unit.*\|g\|=0\.5"),
    "no_b0": Case({"bval": _bvals_with(b0=1000, b1=1000)}, "sub-01_dwi.bval", "no b=0 volume"),
    "bval_negative": Case({"bval": _bvals_with(b3=-1000)}, "sub-01_dwi.bval", "non-negative"),
    "bval_text": Case({"bval": "0 0 b1000\n"}, "sub-01_dwi.bval", "not all numbers"),
    "bvec_nan": Case({"bvec": _bvecs_with(4, (float("nan"), 0, 1))}, "sub-01_dwi.bvec",
                     "NaN"),
    "dwi_3d": Case({"dwi": dwi_data(1, scheme()[0])[..., 0]}, "sub-01_dwi.nii.gz", "3-D"),
    "dwi_nan": Case({"dwi": np.where(np.arange(4)[:, None, None, None] == 1, np.nan,
                                     dwi_data(1, scheme()[0])).astype(np.float32)},
                    "sub-01_dwi.nii.gz", "168 voxel value.*NaN or infinite"),
    "dwi_inf": Case({"dwi": np.where(np.arange(14) == 13, np.inf,
                                     dwi_data(1, scheme()[0])).astype(np.float32)},
                    "sub-01_dwi.nii.gz", "NaN or infinite"),
    "dwi_unreadable": Case({"dwi_bytes": lambda raw: b"this is not a NIfTI file" * 20},
                           "sub-01_dwi.nii.gz", "not a readable NIfTI"),
    "dwi_truncated_gz": Case({"dwi_bytes": _truncate(0.6)}, "sub-01_dwi.nii.gz",
                             "truncated or corrupt"),
    "dwi_truncated_gz_stream": Case({"dwi_bytes": _truncated_gzip_data}, "sub-01_dwi.nii.gz",
                                    "truncated or corrupt"),
    "dwi_truncated_nii": Case({"gz": False, "dwi_bytes": _truncate(0.7)}, "sub-01_dwi.nii",
                              r"truncated image: the header describes \d+ bytes"),
    "t1w_truncated": Case({"t1w": True, "t1w_bytes": _truncate(0.5)}, "sub-01_T1w.nii.gz",
                          "truncated or corrupt|not a readable"),
    "missing_bval": Case({"drop": ["sub-01/dwi/sub-01_dwi.bval"]}, "sub-01_dwi.bval",
                         "missing: the b-values"),
    "missing_bvec": Case({"drop": ["sub-01/dwi/sub-01_dwi.bvec"]}, "sub-01_dwi.bvec",
                         "missing: the b-vectors"),
    "missing_dwi": Case({"drop": ["sub-01/dwi/sub-01_dwi.nii.gz"]}, "sub-01/dwi",
                        "no DWI image"),
    "second_dwi_series_broken": Case({"add": {"sub-01/dwi/sub-01_run-2_dwi.nii.gz": "x"}},
                           "sub-01/dwi", "2 DWI series"),
    "unknown_participant_label": Case(participant_label=("07",), file="bids",
                                      match=r"participant label\(s\) \['07'\] not found"),
    "participants_missing": Case({"participants": False}, "participants.tsv", "not found",
                                 **_GROUP),
    "participants_no_id_column": Case({"participants": "id score\n01 1\n"}, "participants.tsv",
                                      "no 'participant_id' column", **_GROUP),
    "participants_ragged": Case({"participants": "participant_id\tscore\tage\tsex\n"
                                                 "sub-01\t1\t30\n"}, "participants.tsv",
                                "line 2 has 3", **_GROUP),
    "score_column_absent": Case({"columns": {"resilience": [1, 2, 3]}}, "participants.tsv",
                                "no column 'cdrisc'", level="group", score="cdrisc"),
    "covariate_column_absent": Case({}, "participants.tsv", "no column 'education'",
                                    level="group", score="score", covariates=("education",)),
    "score_not_numeric": Case({"columns": {"score": [55, "high", 60]}}, "participants.tsv",
                              "must hold numbers.*sub-02='high'", **_GROUP),
    "score_missing_value": Case({"columns": {"score": [55, "n/a", 60]}}, "participants.tsv",
                                "missing value.*'score'.*sub-02", **_GROUP),
    "covariate_missing_value": Case({"columns": {"age": [30, 40, ""]}}, "participants.tsv",
                                    "missing value.*'age'.*sub-03", **_GROUP),
    "covariate_mixed": Case({"columns": {"age": [30, "forty", 50]}}, "participants.tsv",
                            "mixes numbers and text", **_GROUP),
    "subject_without_row": Case({"participants": participants_text(
        ["01", "02"], {"score": [1, 2], "age": [30, 40], "sex": ["M", "F"]})},
        "participants.tsv", r"images but no row: sub-03", **_GROUP),
    "row_without_images": Case({"extra_labels": ["09"], "columns": {
        "score": [1, 2, 3, 4], "age": [30, 40, 50, 60], "sex": ["M", "F", "M", "F"]}},
        "participants.tsv", r"without images.*sub-09", **_GROUP),
}


def build_case(tmp_path: Path, case: Case) -> Path:
    """The BIDS_DIR of a malformed case (built below ``tmp_path``)."""
    if case.path == "empty":
        (tmp_path / "empty").mkdir()
    elif case.path == "nosub":
        (tmp_path / "nosub").mkdir()
        (tmp_path / "nosub" / "participants.tsv").write_text("participant_id\n")
    elif case.path is None:
        return make_bids(tmp_path, **case.mutations)
    return tmp_path / case.path


def tree(folder: Path) -> set[str]:
    """Every path below ``folder`` (files and folders), relative to it."""
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}
