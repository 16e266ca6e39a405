"""Session 8 adversarial pass: a new user's real data from other scanners and schemes.
Each test failed before its fix (see benchmarks/RESULTS.md, *Adversarial pass (session 8)*).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import test_adversarial_qa as qa6
from test_adversarial_qa import _fit, _randomise, _run  # the session-6 pass's helpers
from test_malformed import factory  # tests/io/bids_factory.py, loaded by file path

from microvba.cli import main

rdata = qa6.rdata  # the session-6 pass's randomise stack (a fixture)


def _fa(out: Path) -> np.ndarray:
    return nib.load(str(next(out.glob("*param-fa_dwimap.nii.gz")))).get_fdata()


# --- fit: signal stored in other units ----------------------------------------------------

@pytest.mark.parametrize("scale", [1e-6, 1e-30])
def test_tensor_fa_does_not_depend_on_the_signal_units(msmt, tmp_path, capsys, scale):
    """Signal in small units (Philips floating-point values, S/S0, a 1e-6 rescaling) went
    through DIPY's absolute floor of 1e-4 for non-positive signal: FA changed by up to 0.37
    in 107 of 2,215 mask voxels at 1e-6 and in every voxel at 1e-30, exit 0."""
    _run(tmp_path, capsys, _fit(msmt, msmt["img"].get_filename(), tmp_path / "ref"), 0)
    dwi = tmp_path / "scaled_dwi.nii.gz"
    nib.save(nib.Nifti1Image(msmt["data"] * np.float32(scale), msmt["img"].affine), str(dwi))
    _run(tmp_path, capsys, _fit(msmt, dwi, tmp_path / "out"), 0)
    mask = nib.load(str(msmt["mask"])).get_fdata() > 0
    # float32 rounding of the rescaled signal only
    np.testing.assert_allclose(_fa(tmp_path / "out")[mask], _fa(tmp_path / "ref")[mask],
                               atol=1e-5)


# --- BIDS App: layouts of other sites -------------------------------------------------------

def test_group_refuses_several_sessions_per_subject(tmp_path, capsys):
    """Two sessions per subject entered the group GLM as two subjects with the same score
    (12 rows for 6 subjects: pseudo-replication), silently. Now refused before any work,
    with --session-label as the fix; one session selected passes this check."""
    bids = factory.make_bids(tmp_path, n_subjects=6, sessions=["pre", "post"])
    out = tmp_path / "out"
    argv = [bids, out, "group", "--score", "score", "--no-decode", "--n-jobs", "1"]
    err, new = _run(tmp_path, capsys, argv, 2)
    assert "6 subject(s) have several sessions" in err and "sub-01: ses-post, ses-pre" in err
    assert "pseudo-replication" in err and "--session-label post" in err
    assert not new
    # with one session the group stage goes on (and stops at the missing participant maps)
    err, new = _run(tmp_path, capsys, argv + ["--session-label", "pre"], 2)
    assert "several sessions" not in err and "sub-01_ses-pre" in err and not new


def _participant(bids: Path, out: Path) -> list:
    return [bids, out, "participant", "--models", "tensor", "--skip-normalise", "--n-jobs", "1"]


def test_series_stored_twice_as_nii_and_niigz_refused(tmp_path, capsys):
    """``gunzip -k`` leaves sub-01_dwi.nii beside sub-01_dwi.nii.gz: both were combined into
    one 28-volume scheme (every volume twice, so repeated-direction noise estimates see zero
    differences). Now refused at the door, naming both files."""
    bids = factory.make_bids(tmp_path, n_subjects=2)
    d = bids / "sub-01" / "dwi"
    nib.save(nib.load(str(d / "sub-01_dwi.nii.gz")), str(d / "sub-01_dwi.nii"))
    err, new = _run(tmp_path, capsys, _participant(bids, tmp_path / "out"), 2)
    assert "the same series is there twice: sub-01_dwi.nii and sub-01_dwi.nii.gz" in err
    assert not new


def test_raw_and_preprocessed_series_not_combined(tmp_path, capsys):
    """A preprocessed copy (``desc-preproc``) beside the raw series was combined with it into
    one scheme. Now refused, with the --dwi-filter that keeps one version; the filter runs."""
    bids = factory.make_bids(tmp_path, n_subjects=2)
    d = bids / "sub-01" / "dwi"
    for ext in (".nii.gz", ".bval", ".bvec"):
        (d / f"sub-01_desc-preproc_dwi{ext}").write_bytes((d / f"sub-01_dwi{ext}").read_bytes())
    err, new = _run(tmp_path, capsys, _participant(bids, tmp_path / "out"), 2)
    assert "differ in desc-" in err and "--dwi-filter desc-preproc" in err and not new
    from microvba.io.bids import discover

    (s1,) = discover(bids, dwi_filter="desc-preproc", participant_label=["01"])
    assert [x.dwi.name for x in s1.series] == ["sub-01_desc-preproc_dwi.nii.gz"]


def test_phase_part_left_out_of_the_scheme(tmp_path, capsys, caplog):
    """A complex-valued acquisition stored as part-mag and part-phase series: the phase
    images were combined with the magnitude as more diffusion volumes. Now the phase series
    is left out with a warning, and a folder of phase images only is refused."""
    from microvba.io.bids import discover

    bids = factory.make_bids(tmp_path, n_subjects=1)
    d = bids / "sub-01" / "dwi"
    for ext in (".nii.gz", ".bval", ".bvec"):
        src = d / f"sub-01_dwi{ext}"
        (d / f"sub-01_part-mag_dwi{ext}").write_bytes(src.read_bytes())
        (d / f"sub-01_part-phase_dwi{ext}").write_bytes(src.read_bytes())
        src.unlink()
    (subject,) = discover(bids)
    assert [s.dwi.name for s in subject.series] == ["sub-01_part-mag_dwi.nii.gz"]
    assert [p.name for p in subject.excluded] == ["sub-01_part-phase_dwi.nii.gz"]
    assert "non-magnitude series sub-01_part-phase_dwi.nii.gz" in caplog.text
    capsys.readouterr()  # (the CLI's log handler of an earlier test may print here)
    for ext in (".nii.gz", ".bval", ".bvec"):
        (d / f"sub-01_part-mag_dwi{ext}").unlink()
    err, new = _run(tmp_path, capsys, _participant(bids, tmp_path / "out"), 2)
    assert "only non-magnitude DWI series (sub-01_part-phase_dwi.nii.gz)" in err and not new


def test_session_less_dwi_beside_sessions_refused(tmp_path, capsys):
    """sub-01/dwi/ beside sub-01/ses-1/dwi/ was skipped without a word (only the session was
    processed). Now refused, naming the files left outside the sessions."""
    bids = factory.make_bids(tmp_path, n_subjects=2, sessions=["1"])
    ses, flat = bids / "sub-01" / "ses-1" / "dwi", bids / "sub-01" / "dwi"
    flat.mkdir()
    for f in ses.iterdir():
        (flat / f.name.replace("_ses-1", "")).write_bytes(f.read_bytes())
    err, new = _run(tmp_path, capsys, _participant(bids, tmp_path / "out"), 2)
    assert "DWI series outside the session folders (sub-01_dwi.nii.gz) beside ses-1" in err
    assert not new


# --- designs: values a spreadsheet writes for "missing" -------------------------------------

def test_missing_data_code_in_the_score_refused(rdata, tmp_path, capsys):
    """-999 (SPSS's missing code) among scores of about -2 to 2 was fitted as a real score
    and dominated the regression, exit 0. Now refused naming the row; 999 in a covariate
    likewise; a genuine wide range (values up to 5,000) keeps a 999."""
    root, maps, design = rdata
    ids = [f"sub-{i:02d}" for i in range(1, 13)]
    d = design(ids)
    lines = d.read_text().splitlines()
    lines[3] = "sub-03\t-999"
    d.write_text("\n".join(lines) + "\n")
    err, new = _run(tmp_path, capsys, _randomise(root, maps, d), 2)
    assert "column 'score' holds -999 (rows sub-03)" in err and "n/a" in err and not new
    import pandas as pd

    from microvba.stats.design import missing_code_rows

    assert missing_code_rows(pd.Series([20.0, 35, 999, 41], index=list("abcd"))) == ["c"]
    part = tmp_path / "participants.tsv"  # roi reads participants.tsv itself
    part.write_text("participant_id\tscore\tage\n" + "".join(
        f"sub-{i:02d}\t{50 + i}\t{9999 if i == 4 else 30 + i}\n" for i in range(1, 13)))
    err, new = _run(tmp_path, capsys, ["roi", "--map", *maps, "--atlas", "brainnetome",
                                       "--region", "A23c", "--participants", part,
                                       "--score", "score", "--covariates", "age"], 2)
    assert "column 'age' holds 9999 for sub-04" in err and not new
    assert missing_code_rows(pd.Series([120.0, 5000, 999, 2400], index=list("abcd"))) == []


# --- path options ---------------------------------------------------------------------------

def test_empty_output_path_refused(msmt, tmp_path, capsys, monkeypatch):
    """``-o "$OUT"`` with OUT unset wrote every map into the current folder, exit 0."""
    monkeypatch.chdir(tmp_path)
    argv = _fit(msmt, msmt["img"].get_filename(), "")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    assert "an empty path (an unset shell variable?)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_folder_that_cannot_be_created_refused_before_fitting(msmt, tmp_path, capsys):
    """An output folder on a file system that refuses it (here /proc; a read-only mount, or
    root on a root-squashed share, likewise) passed the permission check and failed after
    the fit (exit 1, OS error). Now refused at the door."""
    err, new = _run(tmp_path, capsys, _fit(msmt, msmt["img"].get_filename(), "/proc/xyz"), 2)
    assert "the output folder cannot be created in /proc" in err and "INFO" not in err


def test_single_shell_dataset_with_default_models_refused_at_the_door(tmp_path, capsys):
    """A clinical single-shell dataset (b=1000) run with the default models (tensor, noddi):
    every subject failed in its worker (exit 1, the output folder and logs written). Now
    the scheme check at the door names the subject's gradient file and --models tensor."""
    bids = factory.make_bids(tmp_path, n_subjects=2,
                             bval="0 5 " + " ".join(["1000"] * 12) + "\n")
    out = tmp_path / "out"
    err, new = _run(tmp_path, capsys, [bids, out, "participant", "--skip-normalise",
                                       "--n-jobs", "1"], 2)
    assert "sub-01_dwi.bvec: NODDI needs q-space sampled along the radius" in err
    assert "--models tensor" in err and "sub-02" not in err and not out.exists()


def test_failure_of_combined_series_names_the_users_files(tmp_path, capsys):
    """A subject whose two runs are combined failed with a message naming our temporary
    work file (``out/sub-01/dwi/.tmp-<pid>@<host>@sub-01_desc-combined_dwi.nii``), which no
    longer exists when the user reads it. Now the message names the subject's series."""
    bids = factory.make_bids(tmp_path, n_subjects=1)  # 4 x 4 x 3: the automatic mask fails
    d = bids / "sub-01" / "dwi"
    for ext in (".nii.gz", ".bval", ".bvec"):
        (d / f"sub-01_run-2_dwi{ext}").write_bytes((d / f"sub-01_dwi{ext}").read_bytes())
    err, _ = _run(tmp_path, capsys, [bids, tmp_path / "out", "participant", "--models",
                                     "tensor", "--skip-normalise", "--n-jobs", "1"], 1)
    assert f"sub-01 (series {d / 'sub-01_dwi.nii.gz'}, {d / 'sub-01_run-2_dwi.nii.gz'}, " \
           "combined): the automatic brain mask" in err
    assert ".tmp-" not in err


def test_three_by_three_bvec_table_is_read_as_fsl_with_a_warning(tmp_path, caplog):
    """With 3 volumes a one-row-per-volume .bvec and FSL's 3-row layout look alike; the file
    was transposed (or not) without a word. The FSL reading is kept and now said."""
    from microvba.io.gradients import read_bvecs

    rows = np.array([[0.0, 0.6, 0.8], [0.8, 0.0, 0.6], [0.6, 0.8, 0.0]])
    p = tmp_path / "three.bvec"
    np.savetxt(p, rows, fmt="%g")
    np.testing.assert_array_equal(read_bvecs(p), rows.T)
    assert "3 x 3 b-vector table is ambiguous" in caplog.text


def test_nifti_pair_gets_a_bids_prefix(msmt, tmp_path, capsys):
    """A NIfTI pair (dwi.img + dwi.hdr) was fitted into maps named
    ``pair_dwi.img_space-orig_...``: a dot inside a BIDS entity."""
    nib.save(nib.Nifti1Pair(msmt["data"], msmt["img"].affine), str(tmp_path / "pair_dwi.img"))
    _run(tmp_path, capsys, _fit(msmt, tmp_path / "pair_dwi.img", tmp_path / "out"), 0)
    assert (tmp_path / "out" / "pair_space-orig_model-tensor_param-fa_dwimap.nii.gz").is_file()


def test_subjects_without_the_selected_session_are_named(tmp_path, caplog):
    """--session-label pre on a cohort where sub-02 has only ses-post: sub-02 left the
    analysis without a word (only the subject count in an INFO line showed it)."""
    from microvba.io.bids import discover

    bids = factory.make_bids(tmp_path, n_subjects=3, sessions=["pre", "post"])
    shutil.rmtree(bids / "sub-02" / "ses-pre")
    subjects = discover(bids, session_label=["pre"])
    assert [s.label for s in subjects] == ["01", "03"]
    assert "no session pre for sub-02: left out" in caplog.text


def test_score_kept_in_phenotype_folder_is_pointed_to(tmp_path, capsys):
    """BIDS keeps questionnaires in phenotype/*.tsv; --score cdrisc_total was refused as
    'no column' listing participants.tsv's columns only. Now the phenotype file holding it
    is named, with the fix (copy the column into participants.tsv)."""
    bids = factory.make_bids(tmp_path, n_subjects=3)
    (bids / "phenotype").mkdir()
    (bids / "phenotype" / "cdrisc.tsv").write_text(
        "participant_id\tcdrisc_total\nsub-01\t60\nsub-02\t71\nsub-03\t55\n")
    err, new = _run(tmp_path, capsys, [bids, tmp_path / "out", "group", "--score",
                                       "cdrisc_total", "--no-decode"], 2)
    assert "no column 'cdrisc_total'" in err and "cdrisc.tsv in phenotype/" in err
    assert "Copy that column into participants.tsv" in err and not new


def test_missing_or_conflicting_orientation_is_reported(msmt, tmp_path, capsys, caplog):
    """A header without orientation (qform and sform codes 0), or whose qform and sform
    disagree (a tool rewrote only one), was used without a word; ITK-based tools read the
    qform, nibabel and FSL the sform. Both are now warned about, naming the file."""
    img = nib.Nifti1Image(msmt["data"], msmt["img"].affine)
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "bare_dwi.nii.gz"))
    moved = nib.Nifti1Image(msmt["data"], msmt["img"].affine)
    q = msmt["img"].affine.copy()
    q[:3, 3] += 5.0
    moved.set_qform(q, code=1)
    nib.save(moved, str(tmp_path / "moved_dwi.nii.gz"))
    argv = _fit(msmt, tmp_path / "bare_dwi.nii.gz", tmp_path / "bare")
    argv.remove("--mask"), argv.remove(msmt["mask"])
    _run(tmp_path, capsys, argv, 0)
    assert "bare_dwi.nii.gz: no orientation in the header" in caplog.text
    _run(tmp_path, capsys, _fit(msmt, tmp_path / "moved_dwi.nii.gz", tmp_path / "moved"), 0)
    assert "moved_dwi.nii.gz: the qform and sform differ (by up to 8.7 mm" in caplog.text
    caplog.clear()
    _run(tmp_path, capsys, _fit(msmt, msmt["img"].get_filename(), tmp_path / "ok"), 0)
    assert "qform" not in caplog.text


def test_folder_given_for_an_image_is_called_a_folder(msmt, tmp_path, capsys):
    """``fit DIR`` and ``roi --map DIR`` said 'file not found' for a folder that exists."""
    folder = tmp_path / "maps"
    folder.mkdir()
    err, new = _run(tmp_path, capsys, _fit(msmt, folder, tmp_path / "out"), 2)
    assert "maps: a folder, not the DWI file" in err and not new
    err, new = _run(tmp_path, capsys, ["roi", "--map", folder, "--atlas", "brainnetome",
                                       "--region", "A23c"], 2)
    assert "maps: a folder, not a map" in err and "sub-*_fa.nii.gz" in err and not new


def test_required_options_can_come_from_the_config_file(msmt, tmp_path, capsys):
    """README: 'Every option can also be given in a TOML file'; fit's --bval, --bvec and -o
    written there were refused ('the following arguments are required'), exit 2."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'bval = "{msmt["bval"]}"\nbvec = "{msmt["bvec"]}"\nmask = "{msmt["mask"]}"\n'
                   f'output = "{tmp_path / "out"}"\nmodel = "tensor"\n')
    _run(tmp_path, capsys, ["fit", msmt["img"].get_filename(), "--config", cfg], 0)
    assert (tmp_path / "out" / "msmt_space-orig_model-tensor_param-fa_dwimap.nii.gz").is_file()
    with pytest.raises(SystemExit):  # still required when neither gives it
        cfg.write_text('model = "tensor"\n')
        main(["fit", msmt["img"].get_filename(), "--config", str(cfg)])
    assert "the following arguments are required: --bval, --bvec" in capsys.readouterr().err


def test_nan_background_with_the_automatic_mask(msmt, tmp_path, capsys, caplog):
    """A series whose background a masking tool wrote as NaN, fitted without --mask: the
    automatic mask's dilation reached 7 background voxels and the fit was refused ('7
    voxel(s) inside the brain mask hold NaN'). Voxels NaN in every volume are now left out
    of the automatic mask with a warning; a NaN in some volumes of a voxel is still refused."""
    brain = nib.load(str(msmt["mask"])).get_fdata() > 0
    data = msmt["data"].copy()
    data[~brain] = np.nan
    dwi = tmp_path / "nanbg_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    argv = _fit(msmt, dwi, tmp_path / "out")
    i = argv.index("--mask")
    del argv[i:i + 2]
    _run(tmp_path, capsys, argv, 0)
    assert "of the automatic brain mask are NaN or infinite in every volume" in caplog.text
    fitted = nib.load(str(next((tmp_path / "out").glob("*desc-brain_mask.nii.gz")))).get_fdata()
    assert fitted.any() and not (fitted.astype(bool) & ~brain).any()
    ijk = tuple(np.argwhere(fitted > 0)[0])
    data[ijk + (7,)] = np.nan  # one volume of a brain voxel: corrupt, not background
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    argv[argv.index("-o") + 1] = tmp_path / "out2"
    err, _ = _run(tmp_path, capsys, argv, 2)
    assert "inside the brain mask hold NaN or infinite values" in err
