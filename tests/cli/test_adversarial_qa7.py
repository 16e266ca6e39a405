"""Session 7 adversarial pass: the three leftovers of session 6 (dropped and inverted volumes
at the BIDS App's door, group-stage config keys checked by every stage) and new attacks on
decode, report, fit and randomise. Each test failed before its fix (see
benchmarks/RESULTS.md, *Adversarial pass (session 7)*).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_adversarial_qa import _fit, _run  # the session-6 pass's helpers

from microvba.cli import main

# --- leftovers 1-2: dropped and inverted volumes, in fit and at the BIDS door -------------

def test_inverted_volume_refused_in_fit(msmt, tmp_path, capsys):
    """A diffusion-weighted volume multiplied by -1 was fitted (exit 0): the tensor clipped
    its signal and read it as total attenuation along that direction."""
    data = msmt["data"].copy()
    v = int(np.flatnonzero(msmt["bvals"] > 50)[3])
    data[..., v] *= -1
    dwi = tmp_path / "inv_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    err, new = _run(tmp_path, capsys, _fit(msmt, dwi, tmp_path / "out"), 2)
    assert "inv_dwi.nii.gz" in err and "inverted" in err
    assert f"{v} (b={msmt['bvals'][v]:g})" in err and "fslselectvols" in err
    assert not new


@pytest.fixture
def box(tmp_path):
    bids = tmp_path / "bids"
    assert main(["simulate", str(bids), "--box", "--n-subjects", "2"]) == 0
    return bids


def _edit_dwi(path: Path, edit) -> np.ndarray:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    edit(data)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    return data


@pytest.mark.parametrize("kind", ["dropped", "inverted"])
def test_bids_door_refuses_bad_volume_before_any_fit(box, tmp_path, capsys, kind):
    """A dropped volume in sub-01 was found only when sub-01 was fitted (exit 1, sub-02
    processed); an inverted one not at all. Now the up-front validation refuses the dataset
    (exit 2) naming the file, volume and b-value, before any subject is fitted."""
    dwi = box / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    bvals = np.loadtxt(box / "sub-01" / "dwi" / "sub-01_dwi.bval")
    v = int(np.flatnonzero(bvals > 50)[2])

    def edit(d):
        d[..., v] = 0 if kind == "dropped" else -d[..., v]

    _edit_dwi(dwi, edit)
    out = tmp_path / "out"
    err, new = _run(tmp_path, capsys, [box, out, "participant", "--models", "tensor"], 2)
    assert "sub-01_dwi.nii.gz" in err and f"{v} (b={bvals[v]:g})" in err
    assert ("zero in every voxel" if kind == "dropped" else "inverted") in err
    assert "fslselectvols" in err and "sub-02" not in err
    assert not any("sub-0" in p for p in new)  # no subject was fitted


def test_scan_per_volume_figures_match_numpy(tmp_path):
    """The streamed scan's per-volume sum/min/max equal numpy's on the loaded array, with
    chunks that cut volumes in the middle, NaN values and a negative scl_slope."""
    from microvba.io.nifti import scaled_volume_stats, scan_nifti

    rng = np.random.default_rng(3)
    raw = rng.integers(-50, 400, size=(7, 5, 3, 9)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(-0.5, 3.0)
    path = tmp_path / "s.nii.gz"
    nib.save(img, str(path))
    img = nib.load(str(path))
    scan = scan_nifti(path, img, chunk_bytes=37 * 2)  # 37 items: not a multiple of a volume
    stats = scaled_volume_stats(img, scan)
    ref = np.asarray(img.get_fdata()).reshape(-1, 9)
    np.testing.assert_allclose(stats["mean"], ref.mean(0))
    np.testing.assert_allclose(stats["min"], ref.min(0))
    np.testing.assert_allclose(stats["max"], ref.max(0))
    f = rng.normal(100, 20, size=(4, 4, 4, 5)).astype(np.float32)
    f[1, 2, 3, 2] = np.nan
    fpath = tmp_path / "f.nii"
    nib.save(nib.Nifti1Image(f, np.eye(4)), str(fpath))
    fimg = nib.load(str(fpath))
    stats = scaled_volume_stats(fimg, scan_nifti(fpath, fimg, chunk_bytes=100 * 4))
    np.testing.assert_allclose(stats["mean"], np.nanmean(f.reshape(-1, 5), 0), rtol=1e-6)


# --- leftover 3: a --config file is checked whole, whatever the stage ---------------------

@pytest.mark.parametrize(("stage", "toml", "key"), [
    ("participant", "n_perm = 0\nfwhm = 6\n", "n_perm"),
    ("participant", 'correct_across = "everything"\n', "correct_across"),
    ("group", 'score = "score"\ndti_bmax = 0\n', "dti_bmax"),
])
def test_config_key_of_other_stage_refused(box, tmp_path, capsys, stage, toml, key):
    """A group-stage key with an invalid value (n_perm = 0) was accepted by the participant
    stage, which does not use it, and refused only at the group stage, hours later."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(toml)
    out = tmp_path / "out"
    err, new = _run(tmp_path, capsys, [box, out, stage, "--config", cfg], 2)
    assert f"key '{key}'" in err and "run.toml" in err
    assert not new


def test_config_with_valid_other_stage_keys_accepted(box, tmp_path, capsys):
    """The same file with valid group keys still drives the participant stage."""
    cfg = tmp_path / "run.toml"
    cfg.write_text('n_perm = 100\nfwhm = 4\nmodels = ["tensor"]\nskip_normalise = true\n'
                   'participant_label = ["01"]\n')
    _run(tmp_path, capsys, [box, tmp_path / "out", "participant", "--config", cfg], 0)


# --- decode: every resource an option can request is bounded ------------------------------

@pytest.fixture(scope="module")
def mni_roi(tmp_path_factory):
    affine = np.array([[2.0, 0, 0, -98], [0, 2, 0, -134], [0, 0, 2, -72], [0, 0, 0, 1]])
    data = np.zeros((99, 117, 95), np.uint8)
    data[25:30, 75:80, 50:55] = 1
    path = tmp_path_factory.mktemp("roi") / "roi.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


DECODE_BAD = [
    (["--n-null", "1000000000000"], "--n-null", "[0, 100000]"),  # MemoryError, exit 1
    (["--n-null", "1000000"], "--n-null", "[0, 100000]"),        # ran past 100 s
    (["--threshold", "0"], "--threshold", "(0, 1)"),             # NotImplementedError
    (["--threshold", "1"], "--threshold", "(0, 1)"),             # empty table, exit 0
    (["--labels", "0"], "--labels", "background"),               # "<ROI image>" covers 100%
]


@pytest.mark.parametrize(("extra", "option", "text"), DECODE_BAD,
                         ids=[" ".join(e) for e, _, _ in DECODE_BAD])
def test_decode_option_refused_at_once(mni_roi, tmp_path, capsys, extra, option, text):
    err, new = _run(tmp_path, capsys, ["decode", "--roi", mni_roi, "-o", tmp_path / "out",
                                       "--cache-dir", tmp_path / "cache", *extra], 2)
    assert f"{option}:" in err and text in err
    assert not new


# --- fit: scanner tables and small masks ----------------------------------------------------

def test_denoise_on_a_one_voxel_mask_refused(msmt, tmp_path, capsys):
    """MP-PCA on a 1-voxel mask gave NaN there or "SVD did not converge" (exit 1)."""
    brain = np.argwhere(np.asarray(nib.load(str(msmt["mask"])).dataobj) > 0)
    mask = np.zeros(msmt["data"].shape[:3], np.uint8)
    mask[tuple(brain[len(brain) // 2])] = 1  # where MP-PCA gives NaN (a deterministic case)
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(mask, msmt["img"].affine), str(path))
    dwi = msmt["bval"].parent / "msmt_dwi.nii.gz"
    argv = _fit(msmt, dwi, tmp_path / "out") + ["--denoise"]
    argv[argv.index("--mask") + 1] = path
    err, new = _run(tmp_path, capsys, argv, 2)
    assert "--denoise" in err and "1 voxel" in err and "msmt_dwi.nii.gz" in err
    assert not any(n.startswith("out/") for n in new)


def test_jittered_shells_are_clustered(msmt, tmp_path, capsys):
    """b-values written as the scanner measured them (995/1005-style jitter of +-10) are one
    shell each, not refused or split: same shells and nearly the same FA as the nominal."""
    import json

    rng = np.random.default_rng(0)
    b = msmt["bvals"].copy()
    dw = b > 50
    b[dw] += rng.choice([-10, -5, 5, 10], dw.sum())
    bval = tmp_path / "j.bval"
    np.savetxt(bval, b[None], fmt="%g")
    dwi = msmt["bval"].parent / "msmt_dwi.nii.gz"
    maps = {}
    for name, bv in (("nominal", msmt["bval"]), ("jitter", bval)):
        argv = _fit(msmt, dwi, tmp_path / name)
        argv[argv.index("--bval") + 1] = bv
        _run(tmp_path, capsys, argv, 0)
        side = json.loads(next((tmp_path / name).glob("*param-fa_dwimap.json")).read_text())
        text = json.dumps(side)
        assert '"shells": [700.0, 1200.0, 2800.0]' in text
        maps[name] = np.asarray(nib.load(str(next((tmp_path / name).glob(
            "*param-fa_dwimap.nii.gz")))).dataobj)
    mask = np.asarray(nib.load(str(msmt["mask"])).dataobj) > 0
    assert abs(np.median(maps["jitter"][mask]) - np.median(maps["nominal"][mask])) < 0.005


# --- randomise / roi: tables as spreadsheets write them ------------------------------------

MNI4 = np.array([[-4.0, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """12 subjects' small maps (randomise) and MNI 4 mm maps (roi), and a table writer."""
    root = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(61)
    small, mni = [], []
    for i in range(1, 13):
        p = root / f"sub-{i:02d}_fa.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=(8, 8, 6)).astype(np.float32) + 5,
                                 np.diag([2.0, 2.0, 2.0, 1.0])), str(p))
        small.append(p)
        q = root / "mni" / f"sub-{i:02d}_fa.nii.gz"
        q.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random((46, 55, 46)).astype(np.float32), MNI4), str(q))
        mni.append(q)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 6), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])),
             str(root / "mask.nii.gz"))
    score, age = rng.normal(size=12).round(3), rng.integers(20, 60, 12)

    def table(name, header="participant_id\tscore\tage", pad="", eol="\n", edit=None):
        rows = [[f"sub-{i + 1:02d}", str(score[i]), str(age[i])] for i in range(12)]
        if edit:
            edit(rows)
        text = eol.join([header + pad, *("\t".join(r) + pad for r in rows)]) + eol
        (root / name).write_text(text)
        return root / name

    return root, small, mni, table


def test_design_padded_with_trailing_tabs_accepted(tables, tmp_path, capsys):
    """Rows and header ending in tabs (a spreadsheet's empty columns) were refused as
    "duplicate column names ['']"; CRLF line ends were already read."""
    root, small, _, table = tables
    design = table("pad.tsv", pad="\t\t", eol="\r\n")
    _run(tmp_path, capsys, ["randomise", "-i", *small, "-m", root / "mask.nii.gz", "-d",
                            design, "-o", tmp_path / "out" / "fa", "-n", "20", "--contrast",
                            "score", "--covariates", "age"], 0)


def test_participants_padded_with_trailing_tabs_read():
    """The same padding in a participants.tsv (BIDS App, roi) is read (it was refused: "line
    3 has 2 tab-separated values but the header has 4 columns")."""
    import tempfile

    from microvba.io.participants import read_participants

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "participants.tsv"
        p.write_text("participant_id\tscore\t\t\nsub-01\t1\t\t\nsub-02\t2\n")
        df = read_participants(p)
        assert list(df.columns) == ["participant_id", "score"] and df["score"].tolist() == [1, 2]


def test_roi_text_score_refused_before_reading_maps(tables, tmp_path, capsys, shared_data):
    """A patient/control score ended with "ValueError: could not convert string to float"."""
    root, _, mni, table = tables

    def groups(rows):
        for k, r in enumerate(rows):
            r[1] = "patient" if k % 2 else "control"

    tsv = table("groups.tsv", edit=groups)
    err, new = _run(tmp_path, capsys, ["roi", "--map", *mni, "--region", "A23c",
                                       "--data-dir", shared_data, "--participants", tsv,
                                       "--score", "score", "-o", tmp_path / "roi.tsv"], 2)
    assert "'score' is not numeric" in err and "0 = control, 1 = patient" in err
    assert not new


def test_roi_rows_left_out_for_na_are_named(tables, tmp_path, capsys, shared_data, caplog):
    """Participants with n/a in a covariate were left out silently (only n showed it)."""
    root, _, mni, table = tables

    def na(rows):
        rows[3][2] = "n/a"
        rows[7][2] = "n/a"

    tsv = table("na.tsv", edit=na)
    err, _ = _run(tmp_path, capsys, ["roi", "--map", *mni, "--region", "A23c", "--data-dir",
                                     shared_data, "--participants", tsv, "--score", "score",
                                     "--covariates", "age", "-o", tmp_path / "roi.tsv"], 0)
    assert "2 participant(s) with n/a" in caplog.text and "sub-04, sub-08" in caplog.text
    assert "n = 10" in err


# --- simulate / demo: memory and disk estimated before anything is written ----------------

def test_simulate_memory_estimated_before_writing(tmp_path, capsys, monkeypatch):
    """--resolution 1 (3.3e9 DWI values, ~50 GB) was started; --resolution 0.5 passed the
    command line and was refused by the simulator as "parameter resolution"."""
    monkeypatch.setenv("MICROVBA_MEMORY_LIMIT", str(8 * 2**30))
    err, new = _run(tmp_path, capsys, ["simulate", tmp_path / "sim", "--resolution", "1",
                                       "--n-subjects", "1"], 2)
    assert "--resolution:" in err and "GiB of memory" in err and "8 GiB available" in err
    assert not new
    err, _ = _run(tmp_path, capsys, ["simulate", tmp_path / "sim", "--resolution", "0.5"], 2)
    assert "--resolution must be a number in [1, 8] mm" in err


@pytest.mark.parametrize("cmd", ["simulate", "demo"])
def test_disk_estimated_before_writing(tmp_path, capsys, monkeypatch, cmd):
    """--n-subjects 9000 (about 141 GiB of DWI at 4 mm) wrote until the disk was full."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**40, 2**39, 10 * 2**30))
    argv = (["simulate", tmp_path / "sim", "--cohort"] if cmd == "simulate" else
            ["demo", "--out", tmp_path / "demo", "--no-decode"]) + ["--n-subjects", "9000"]
    err, new = _run(tmp_path, capsys, argv, 2)
    assert "--n-subjects:" in err and "on disk" in err and "10 GiB free" in err
    assert not new


def test_decode_output_inside_data_folder_refused(mni_roi, tmp_path, capsys):
    """-o inside the data folder wrote the tables beside the databases (exit 0)."""
    data = tmp_path / "data"
    (data / "neurosynth").mkdir(parents=True)
    err, new = _run(tmp_path, capsys, ["decode", "--roi", mni_roi, "--data-dir", data,
                                       "-o", data / "neurosynth" / "out",
                                       "--cache-dir", tmp_path / "cache"], 2)
    assert "inside the data folder" in err
    assert not new


@pytest.mark.parametrize("toml", ["fwhm = -1\n", "fwhm = nan\n", "alpha = 2\n"])
def test_config_numbers_of_other_stage_refused(box, tmp_path, capsys, toml):
    """Integers, floats and NaN written in the file are compared as numbers with the parsed
    options (so that a value the command line overrode is not blamed on the file)."""
    cfg = tmp_path / "run.toml"
    cfg.write_text(toml)
    err, new = _run(tmp_path, capsys, [box, tmp_path / "out", "participant", "--config", cfg],
                    2)
    assert f"key '{toml.split()[0]}'" in err
    assert not new


def test_config_value_overridden_on_command_line_not_blamed_on_file(box, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("n_perm = 100\n")
    _run(tmp_path, capsys, [box, tmp_path / "out", "participant", "--config", cfg,
                            "--n-perm", "0", "--models", "tensor", "--skip-normalise",
                            "--participant-label", "01"], 0)
