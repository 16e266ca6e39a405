"""Participant stage with several DWI series per subject: one NODDI fit on the combined scheme.

A simulated multi-shell subject is split into two runs, run-1 (b=0 + b=1000) and run-2
(b=0 + b=2000): each alone is a single shell, which NODDI refuses; together they are two.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from microvba._provenance import file_hash
from microvba.cli import main

simulate = pytest.importorskip("microvba.simulate")

SHAPE = (10, 10, 6)
BASE = ["--skip-normalise", "--n-jobs", "1", "-q"]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_hash(p) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _simulate(tmp_path: Path, name: str = "bids") -> Path:
    return simulate.simulate_dataset(tmp_path / name, n_subjects=1, scheme="multishell",
                                     shape=SHAPE, seed=5)


def _split(bids: Path, shift_mm: float = 0.0) -> Path:
    """sub-01_dwi -> sub-01_run-1_dwi (b=0 + b=1000) and sub-01_run-2_dwi (b=0 + b=2000)."""
    d = bids / "sub-01" / "dwi"
    img = nib.load(d / "sub-01_dwi.nii.gz")
    data = np.asarray(img.dataobj)
    bvals = np.loadtxt(d / "sub-01_dwi.bval")
    bvecs = np.loadtxt(d / "sub-01_dwi.bvec")
    b0 = np.flatnonzero(bvals < 50)
    runs = {"1": np.r_[b0[: len(b0) // 2], np.flatnonzero(np.isclose(bvals, 1000))],
            "2": np.r_[b0[len(b0) // 2:], np.flatnonzero(np.isclose(bvals, 2000))]}
    for run, vols in runs.items():
        stem = d / f"sub-01_run-{run}_dwi"
        affine = img.affine.copy()
        if run == "2":
            affine[1, 3] += shift_mm
        out = nib.Nifti1Image(data[..., vols], affine, img.header)
        nib.save(out, str(stem) + ".nii.gz")
        np.savetxt(str(stem) + ".bval", bvals[vols][None], fmt="%g")
        np.savetxt(str(stem) + ".bvec", bvecs[:, vols], fmt="%.8f")
    for ext in (".nii.gz", ".bval", ".bvec", ".json"):
        (d / f"sub-01_dwi{ext}").unlink(missing_ok=True)
    return bids


def _sidecar(out: Path, model: str, param: str) -> dict:
    f = out / "sub-01" / "dwi" / f"sub-01_space-orig_model-{model}_param-{param}_dwimap.json"
    return json.loads(f.read_text())


def test_two_single_shell_runs_are_fitted_as_one_noddi_scheme(tmp_path):
    bids = _split(_simulate(tmp_path))
    before = _hashes(bids)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", *BASE]) == 0
    icvf = out / "sub-01" / "dwi" / "sub-01_space-orig_model-noddi_param-icvf_dwimap.nii.gz"
    assert icvf.exists()
    scheme = _sidecar(out, "noddi", "icvf")["Scheme"]
    assert scheme["shells"] == [1000.0, 2000.0] and scheme["n_volumes"] == 96
    data = nib.load(icvf).get_fdata()
    assert np.isfinite(data).all() and data.max() > 0
    # provenance: which series, in which order, which volumes
    record = json.loads((out / "logs" / "sub-01_dwi-series.json").read_text())
    combined = record["Combined"]
    assert [Path(c["dwi"]).name for c in combined] == ["sub-01_run-1_dwi.nii.gz",
                                                       "sub-01_run-2_dwi.nii.gz"]
    assert [c["volumes"] for c in combined] == [[0, 32], [33, 95]]
    assert combined[1]["InputHashes"]["dwi"] == before["sub-01/dwi/sub-01_run-2_dwi.nii.gz"]
    assert 0.9 < combined[1]["b0_scale"] < 1.1
    # every map names the original series as its Sources (not the removed work file)
    sources = _sidecar(out, "noddi", "icvf")["Sources"]
    assert [Path(p).name for p in sources] == [
        f"sub-01_run-{r}_dwi.{e}" for r in (1, 2) for e in ("nii.gz", "bval", "bvec")]
    # inputs untouched, work files gone
    assert _hashes(bids) == before
    assert not list(out.rglob(".tmp-*")) and not list(out.rglob("*desc-combined*"))
    # a rerun finds the outputs up to date (the combined work file is reproducible)
    mtime = icvf.stat().st_mtime_ns
    assert main([str(bids), str(out), "participant", *BASE]) == 0
    assert icvf.stat().st_mtime_ns == mtime


def test_dwi_filter_selects_one_run(tmp_path):
    bids = _split(_simulate(tmp_path))
    before = _hashes(bids)
    out = tmp_path / "out"
    # run-1 alone is one shell: NODDI (a default model) is refused at the door
    assert main([str(bids), str(out), "participant", *BASE, "--dwi-filter", "run-1"]) == 2
    assert not out.exists()
    assert main([str(bids), str(out), "participant", *BASE, "--dwi-filter", "run-1",
                 "--models", "tensor"]) == 0
    scheme = _sidecar(out, "tensor", "fa")["Scheme"]
    assert scheme["shells"] == [1000.0] and scheme["n_volumes"] == 33
    fa_inputs = _sidecar(out, "tensor", "fa")["InputHashes"]
    assert fa_inputs["dwi"] == before["sub-01/dwi/sub-01_run-1_dwi.nii.gz"]  # read in place
    assert Path(_sidecar(out, "tensor", "fa")["Sources"][0]).name == "sub-01_run-1_dwi.nii.gz"
    assert not (out / "logs" / "sub-01_dwi-series.json").exists()
    assert "dwi_filter = [\"run-1\"]" in (out / "logs" / "participant_config.toml").read_text()
    assert _hashes(bids) == before


def test_series_on_different_grids_are_refused_before_any_output(tmp_path, capsys):
    bids = _split(_simulate(tmp_path), shift_mm=2.0)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", *BASE]) == 2
    err = capsys.readouterr().err
    assert "sub-01_run-2_dwi.nii.gz: not on the voxel grid of sub-01_run-1_dwi.nii.gz" in err
    assert "affines differ by up to 2 mm" in err and "--dwi-filter" in err
    assert not out.exists()


def test_bad_dwi_filter_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), str(tmp_path / "out"), "participant", "--dwi-filter", "b1000"])
    assert exc.value.code == 2
    assert "not a BIDS entity-value pair" in capsys.readouterr().err


def test_single_series_reads_the_input_in_place(tmp_path):
    bids = _simulate(tmp_path)
    before = _hashes(bids)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", *BASE, "--models", "tensor"]) == 0
    inputs = _sidecar(out, "tensor", "fa")["InputHashes"]
    assert inputs == {"dwi": before["sub-01/dwi/sub-01_dwi.nii.gz"],
                      "bval": before["sub-01/dwi/sub-01_dwi.bval"],
                      "bvec": before["sub-01/dwi/sub-01_dwi.bvec"]}
    assert not list((out / "logs").glob("*dwi-series*"))
    assert _hashes(bids) == before
