"""Writing a simulated BIDS dataset (every file atomically, via :mod:`microvba._provenance`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .. import __version__
from .._provenance import save_nifti, write_json, write_text
from .phenotype import COLUMNS

BIDS_VERSION = "1.9.0"

PARTICIPANTS_JSON: dict[str, dict[str, Any]] = {
    "participant_id": {"Description": "participant label"},
    "resilience": {"Description": "psychological resilience, CD-RISC-25 total (simulated)",
                   "Units": "points"},
    "age": {"Description": "age at scan", "Units": "years"},
    "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    "education": {"Description": "years of education", "Units": "years"},
    "severity": {"Description": "depression severity, HAMD-17 total (simulated)",
                 "Units": "points"},
}


def prepare_root(root: Path, labels: list[str]) -> None:
    """Make ``root`` ready for a simulated dataset with subjects ``labels``.

    An absent or empty folder is fine. A folder holding an earlier simulated dataset (its
    ``dataset_description.json`` says microvba generated it) is reused: subject folders that
    the new dataset does not have are removed so that images and ``participants.tsv`` agree.
    Any other non-empty folder is refused, so a user's data is never overwritten.
    """
    import json
    import shutil

    from .._validation import InputError

    if not root.exists() or not any(root.iterdir()):
        return
    desc = root / "dataset_description.json"
    try:
        generated = json.loads(desc.read_text()).get("GeneratedBy", [])
        ours = any(g.get("Name") == "microvba" for g in generated)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise InputError("the folder is not empty and is not a microvba simulated dataset",
                         file=root, fix="Choose a new or empty folder for the simulated data.")
    keep = {f"sub-{label}" for label in labels}
    for sub in root.glob("sub-*"):
        if sub.is_dir() and sub.name not in keep:
            shutil.rmtree(sub)


def write_dataset_description(root: Path, name: str, description: str) -> Path:
    """Raw-dataset ``dataset_description.json`` (BIDS 1.9)."""
    return write_json(root / "dataset_description.json", {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["microvba simulator"],
        "GeneratedBy": [{"Name": "microvba", "Version": __version__,
                         "Description": description}],
    })


def write_participants(root: Path, participants: pd.DataFrame) -> Path:
    """``participants.tsv`` (tab-separated, ``n/a`` for missing) and its JSON sidecar."""
    table = participants.loc[:, list(COLUMNS)]
    lines = ["\t".join(COLUMNS)]
    for _, row in table.iterrows():
        lines.append("\t".join("n/a" if pd.isna(v) else str(v) for v in row))
    write_json(root / "participants.json", PARTICIPANTS_JSON)
    return write_text(root / "participants.tsv", "\n".join(lines) + "\n")


def write_readme(root: Path, text: str) -> Path:
    return write_text(root / "README", text.strip() + "\n")


def write_dwi(root: Path, label: str, data: np.ndarray, affine: np.ndarray,
              bvals: np.ndarray, bvecs: np.ndarray, sidecar: dict[str, Any]) -> Path:
    """``sub-<label>/dwi/sub-<label>_dwi.nii.gz`` (int16) + ``.bval`` + ``.bvec`` + ``.json``.

    ``bvecs`` are written in the FSL layout (3 rows), in the image's voxel axes (the
    simulation grid is axis-aligned, so these are also the world axes).
    """
    folder = root / f"sub-{label}" / "dwi"
    stem = folder / f"sub-{label}_dwi"
    if data.dtype != np.int16:
        data = np.clip(np.rint(data), 0, 32767).astype(np.int16)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(np.int16)
    path = save_nifti(img, stem.with_name(stem.name + ".nii.gz"))
    write_text(stem.with_name(stem.name + ".bval"),
               " ".join(f"{b:g}" for b in np.asarray(bvals, float)) + "\n")
    g = np.asarray(bvecs, float).reshape(-1, 3)
    write_text(stem.with_name(stem.name + ".bvec"),
               "\n".join(" ".join(f"{v:.6f}" for v in g[:, k]) for k in range(3)) + "\n")
    write_json(stem.with_name(stem.name + ".json"), sidecar)
    return path


def dwi_sidecar(scheme: str, snr: float, extra: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """JSON sidecar of a simulated DWI run."""
    return {
        "Manufacturer": "microvba simulator",
        "MagneticFieldStrength": 3,
        "EchoTime": 0.089,
        "RepetitionTime": 5.0,
        "PhaseEncodingDirection": "j-",
        "TotalReadoutTime": 0.05,
        "SimulatedScheme": scheme,
        "SimulatedSNR": float(snr),
        "SoftwareVersions": f"microvba {__version__}",
        **(extra or {}),
    }
