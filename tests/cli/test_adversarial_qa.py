"""Session 6 adversarial pass: inputs a new user hits that were accepted silently, refused
late or with an OS error. Each test failed before its fix (see benchmarks/RESULTS.md,
*Adversarial pass (session 6)*).

Real signal: the MRtrix3 ``msmt`` crop in ``$MICROVBA_DATA/dwi`` (15 x 15 x 11, 102 volumes).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from microvba.cli import main

# MNI152 4 mm grid (covers every atlas region)
MNI4 = np.array([[-4.0, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(tmp_path, capsys, argv, code):
    before = _tree(tmp_path)
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    return err, _tree(tmp_path) - before


# --- fit: signal no model can use ---------------------------------------------------------

def _fit(msmt, dwi, out, model="tensor"):
    return ["fit", dwi, "--bval", msmt["bval"], "--bvec", msmt["bvec"], "--mask",
            msmt["mask"], "-o", out, "--model", model]


def test_dropped_volume_refused_before_fitting(msmt, tmp_path, capsys):
    """A diffusion-weighted volume of zeros (an interrupted or padded series) made the tensor
    read total attenuation along its direction: median FA 0.61 instead of 0.12, exit 0."""
    data = msmt["data"].copy()
    data[..., 10] = 0.0
    dwi = tmp_path / "dropped_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    err, new = _run(tmp_path, capsys, _fit(msmt, dwi, tmp_path / "out"), 2)
    assert "dropped_dwi.nii.gz" in err and "zero in every voxel" in err
    assert "10 (b=" in err and "fslselectvols" in err
    assert not new


def test_small_mask_without_positive_signal_at_one_volume_fits(msmt, tmp_path, capsys):
    """The dropped-volume check looks at the whole image: a small mask (here 8 voxels)
    whose signal at one high-b volume is negative after preprocessing is still fitted."""
    data = msmt["data"].copy()
    data[6:8, 6:8, 4:6, 20] = -1.0
    dwi = tmp_path / "neg_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    small = np.zeros(data.shape[:3], np.uint8)
    small[6:8, 6:8, 4:6] = 1
    mask = tmp_path / "small_mask.nii.gz"
    nib.save(nib.Nifti1Image(small, msmt["img"].affine), str(mask))
    argv = _fit(msmt, dwi, tmp_path / "out")
    argv[argv.index("--mask") + 1] = mask
    _run(tmp_path, capsys, argv, 0)


def test_intact_series_still_fits(msmt, tmp_path, capsys):
    """The check does not refuse real data with a few negative values (the crop has some)."""
    assert (msmt["data"] < 0).any()
    _run(tmp_path, capsys, _fit(msmt, msmt["img"].get_filename(), tmp_path / "out"), 0)
    fa = nib.load(str(next((tmp_path / "out").glob("*param-fa_dwimap.nii.gz")))).get_fdata()
    mask = nib.load(str(msmt["mask"])).get_fdata() > 0
    assert 0.05 < np.median(fa[mask]) < 0.3


def test_empty_b0_volumes_refused(msmt, tmp_path, capsys):
    """b=0 volumes of zeros: the tensor wrote FA = MD = 0.05 everywhere (exit 0)."""
    from microvba.io.gradients import B0_THRESHOLD, read_bvals

    data = msmt["data"].copy()
    data[..., read_bvals(msmt["bval"]) <= B0_THRESHOLD] = 0.0
    dwi = tmp_path / "nob0_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    err, new = _run(tmp_path, capsys, _fit(msmt, dwi, tmp_path / "out"), 2)
    assert "6 volume(s) are zero in every voxel" in err and "0 (b=0.5)" in err
    assert not new


def test_inverted_b0_tensor_is_a_failed_fit(msmt, tmp_path, capsys, caplog):
    """b=0 signal negated in 80% of the mask: the tensor wrote maps (exit 0); now a failed
    fit, as NODDI's (exit 1, no map written)."""
    from microvba.io.gradients import B0_THRESHOLD, read_bvals

    data = msmt["data"].copy()
    b0 = read_bvals(msmt["bval"]) <= B0_THRESHOLD
    mask = nib.load(str(msmt["mask"])).get_fdata() > 0
    idx = np.argwhere(mask)
    sel = tuple(idx[: int(0.8 * len(idx))].T)
    sub = data[sel]
    sub[:, b0] = -np.abs(sub[:, b0]) - 1.0
    data[sel] = sub
    dwi = tmp_path / "inv_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, msmt["img"].affine), str(dwi))
    with caplog.at_level(logging.ERROR):
        err, new = _run(tmp_path, capsys, _fit(msmt, dwi, tmp_path / "out"), 1)
    text = err + caplog.text
    assert "mean b=0 signal" in text and "inv_dwi.nii.gz" in text and "(80% > 50%)" in text
    assert not [p for p in new if p.endswith(".nii.gz")]


# --- roi: resources and meaningless correlations ----------------------------------------

@pytest.fixture(scope="module")
def roi_maps(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("roi")
    rng = np.random.default_rng(6)
    ids = [f"sub-{i:02d}" for i in range(1, 9)]
    maps = []
    for i in ids:
        p = root / f"{i}_fa.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((46, 55, 46)).astype(np.float32), MNI4), str(p))
        maps.append(p)
    (root / "participants.tsv").write_text(
        "participant_id\tscore\tflat\n"
        + "".join(f"{i}\t{rng.normal():.3f}\t7\n" for i in ids))
    return root, maps


def _roi(root, maps, *extra):
    return ["roi", "--map", *maps, "--region", "A23c", "--data-dir", SHARED(root),
            "--participants", root / "participants.tsv", *extra]


def SHARED(_root):  # noqa: N802 - the atlas folder of the shared data
    import os

    return os.environ.get("MICROVBA_DATA", str(Path(__file__).resolve().parents[3]
                                               / "shared" / "data"))


def test_roi_n_boot_bounded(roi_maps, tmp_path, capsys):
    """--n-boot 1e12 ran for more than 10 minutes (no bound); now refused at once."""
    root, maps = roi_maps
    err, _ = _run(tmp_path, capsys, _roi(root, maps, "--score", "score", "--n-boot",
                                         "1000000000000"), 2)
    assert "--n-boot" in err and "[0, 100000]" in err


def test_roi_constant_score_refused(roi_maps, tmp_path, capsys):
    """A constant score gave 'r = 0.000, p = 1' from rounding noise."""
    root, maps = roi_maps
    err, _ = _run(tmp_path, capsys, _roi(root, maps, "--score", "flat"), 2)
    assert "'flat' has the same value (7)" in err and "participants.tsv" in err


def test_roi_subject_given_twice_refused(roi_maps, tmp_path, capsys):
    """The same subject's map twice (a glob and an explicit name) entered the correlation
    twice (n = 9 of 8 subjects)."""
    root, maps = roi_maps
    err, _ = _run(tmp_path, capsys, _roi(root, [*maps, maps[0]], "--score", "score"), 2)
    assert "['sub-01'] have more than one map" in err


def test_roi_output_folder_refused_before_reading(roi_maps, tmp_path, capsys):
    """-o DIR failed after the analysis with 'Is a directory (.tmp-...)' and exit 1."""
    root, maps = roi_maps
    err, new = _run(tmp_path, capsys, _roi(root, maps, "-o", tmp_path), 2)
    assert "is an existing folder" in err and "roi.tsv" in err
    assert not new


def test_roi_valid_run_writes_table(roi_maps, tmp_path, capsys):
    root, maps = roi_maps
    out = tmp_path / "roi.tsv"
    _run(tmp_path, capsys, _roi(root, maps, "--score", "score", "--n-boot", "200", "-o", out), 0)
    import pandas as pd

    tab = pd.read_csv(out, sep="\t")
    assert len(tab) == len(maps) and tab["n_voxels"].gt(0).all()
    shutil.rmtree(tmp_path, ignore_errors=True)


# --- randomise: design tables and exchangeability blocks ---------------------------------

@pytest.fixture
def rdata(tmp_path):
    """12 subjects' 3-D maps named sub-XX (8 x 8 x 6), a mask and a design writer."""
    rng = np.random.default_rng(61)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    maps = []
    for i in range(1, 13):
        p = tmp_path / f"sub-{i:02d}_fa.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=(8, 8, 6)).astype(np.float32) + 5, aff),
                 str(p))
        maps.append(p)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 6), np.uint8), aff), str(tmp_path / "mask.nii.gz"))
    score = rng.normal(size=12).round(3)

    def design(ids, name="design.tsv", extra=""):
        p = tmp_path / name
        p.write_text(f"participant_id\tscore{extra and chr(9) + extra}\n" + "".join(
            f"{pid}\t{s}{extra and chr(9) + str(k % 3)}\n"
            for k, (pid, s) in enumerate(zip(ids, score, strict=True))))
        return p

    return tmp_path, maps, design


def _randomise(root, maps, design, *extra):
    return ["randomise", "-i", *maps, "-m", root / "mask.nii.gz", "-d", design,
            "-o", root / "out" / "fa", "-n", "20", "--contrast", "score", *extra]


def test_design_ids_without_sub_prefix_keep_leading_zeros(rdata, tmp_path, capsys):
    """participant_id 01, 02 ... was read as the numbers 1, 2 and refused as 'rows without
    an image: sub-1, ...' against images sub-01_fa ...; IDs are text now."""
    root, maps, design = rdata
    d = design([f"{i:02d}" for i in range(1, 13)])
    _run(tmp_path, capsys, _randomise(root, maps, d), 0)
    assert (root / "out" / "fa_tstat1.nii.gz").is_file()
    from microvba.io.design_table import read_design_table

    assert list(read_design_table(d).index[:2]) == ["01", "02"]


def test_duplicate_participant_id_refused(rdata, tmp_path, capsys):
    """A repeated participant_id made the table fall back to line numbers, which silently
    turned off the check of the images' order against the rows (exit 0)."""
    root, maps, design = rdata
    ids = [f"sub-{i:02d}" for i in range(1, 13)]
    ids[11] = "sub-01"
    err, new = _run(tmp_path, capsys, _randomise(root, maps, design(ids)), 2)
    assert "participant_id values repeated: sub-01 (lines 2, 13)" in err
    assert "session_id" in err and not new


def test_repeated_measures_with_session_id_accepted(tmp_path):
    from microvba.io.design_table import read_design_table

    p = tmp_path / "d.tsv"
    p.write_text("participant_id\tsession_id\tscore\nsub-01\t1\t3\nsub-01\t2\t4\n")
    assert len(read_design_table(p)) == 2


def test_blocks_without_any_rearrangement_refused(rdata, tmp_path, capsys):
    """--blocks naming a column unique to each row left only the identity: the run wrote
    maps whose every p-value was 1 (exit 0, one warning)."""
    root, maps, design = rdata
    d = design([f"sub-{i:02d}" for i in range(1, 13)])
    err, new = _run(tmp_path, capsys, _randomise(root, maps, d, "--blocks", "participant_id"),
                    2)
    assert "--blocks" in err and "no rearrangement" in err
    assert not [p for p in new if p.endswith(".nii.gz")]


def test_blocks_grouping_subjects_still_run(rdata, tmp_path, capsys):
    root, maps, design = rdata
    d = design([f"sub-{i:02d}" for i in range(1, 13)], extra="site")
    _run(tmp_path, capsys, _randomise(root, maps, d, "--blocks", "site"), 0)


# --- BIDS App: output folder inside the input dataset -------------------------------------

@pytest.mark.parametrize("where", ["out", "code/microvba", "sourcedata/x"])
def test_output_inside_bids_outside_derivatives_refused(tmp_path, capsys, where):
    """BIDS_DIR/out was accepted: the participant stage wrote into the raw dataset."""
    bids = tmp_path / "bids"
    (bids / "sub-01" / "dwi").mkdir(parents=True)
    (bids / "participants.tsv").write_text("participant_id\tscore\nsub-01\t1\n")
    err, new = _run(tmp_path, capsys, [bids, bids / where, "participant"], 2)
    assert "not under its derivatives/ folder" in err and "derivatives/microvba" in err
    assert not new


# --- simulate / demo: bounded options, output folder checked first ------------------------

SIM_BAD = [
    (["--n-subjects", "100000000"], "[1, 10000]"),  # ran for more than 2 minutes
    (["--resolution", "nan"], "[1, 8] mm"),         # accepted
    (["--effect-scale", "nan"], "--effect-scale"),  # accepted
    (["--snr", "0"], "(0, 10000]"),                 # accepted
]


@pytest.mark.parametrize(("extra", "allowed"), SIM_BAD, ids=[" ".join(e) for e, _ in SIM_BAD])
def test_simulate_option_refused(tmp_path, capsys, extra, allowed):
    err, new = _run(tmp_path, capsys, ["simulate", tmp_path / "sim", *extra], 2)
    assert allowed in err and extra[0] in err and not new


@pytest.mark.parametrize("argv", [["simulate", "{f}", "--box"], ["demo", "--out", "{f}"]])
def test_output_folder_that_is_a_file_refused(tmp_path, capsys, argv):
    """A file as the output folder ended with an OS error (exit 1; demo after fetching)."""
    f = tmp_path / "afile"
    f.write_text("x")
    err, new = _run(tmp_path, capsys, [a.format(f=f) for a in argv], 2)
    assert "is an existing file, not a folder" in err and not new


# --- categorical covariates typed two ways ------------------------------------------------

def test_categorical_levels_differing_in_case_refused(rdata, tmp_path, capsys):
    """sex F / f / 'M ' was dummy-coded as four groups (three dummies, exit 0)."""
    root, maps, design = rdata
    d = root / "sex.tsv"
    sexes = ["F", "f", "M", "M ", "F", "M", "f", "F", "M", "F", "M", "F"]
    rows = design([f"sub-{i:02d}" for i in range(1, 13)]).read_text().splitlines()
    d.write_text(rows[0] + "\tsex\n" + "".join(f"{r}\t{s}\n" for r, s in zip(rows[1:], sexes,
                                                                          strict=True)))
    err, new = _run(tmp_path, capsys, _randomise(root, maps, d, "--covariates", "sex"), 2)
    assert "differ only in upper/lower case or spaces: 'F', 'f'; 'M', 'M '" in err
    assert not new


def test_categorical_levels_distinct_names_accepted():
    import pandas as pd

    from microvba.stats.design import make_design

    df = pd.DataFrame({"score": [1.0, 2, 3, 4, 5, 6], "site": ["a", "b", "c", "a", "b", "c"]})
    assert make_design(df, "score", ["site"]).names == ["intercept", "score", "site[b]",
                                                        "site[c]"]


# --- per-model options: bounded -------------------------------------------------------------

def test_mapmri_radial_order_bounded(msmt, tmp_path, capsys):
    """--mapmri-radial-order 1000 was accepted and ran for more than 5 minutes (the basis
    grows as N^3 / 6)."""
    argv = _fit(msmt, msmt["img"].get_filename(), tmp_path / "out", "mapmri")
    with pytest.raises(SystemExit) as exc:  # argparse: exit 2 with the option named
        main([str(a) for a in [*argv, "--mapmri-radial-order", "1000"]])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--mapmri-radial-order" in err and "<= 12" in err
    assert not (tmp_path / "out").exists()
    from microvba._validation import InputError
    from microvba.models.gradients import GradientTable
    from microvba.models.mapmri import MapmriModel

    gtab = GradientTable.from_files(msmt["bval"], msmt["bvec"])
    with pytest.raises(InputError, match=r"even integer in \[2, 12\]; got 14"):
        MapmriModel(gtab, radial_order=14)
    assert MapmriModel(gtab, radial_order=12).radial_order == 12


# --- --config: paths as a shell would give them -------------------------------------------

def test_config_path_with_tilde_is_expanded(tmp_path, monkeypatch):
    """data_dir = "~/atlases" in a TOML file gave Path('~/atlases'): a folder literally
    named '~' in the working directory (no shell expands it)."""
    import argparse

    from microvba.cli._config import apply_config

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "run.toml"
    cfg.write_text('data_dir = "~/atlases"\n')
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--config")
    apply_config(parser, ["--config", str(cfg)])
    assert parser.parse_args([]).data_dir == tmp_path / "atlases"


# --- Excel "Unicode Text" (UTF-16) tables ------------------------------------------------

def test_utf16_design_and_bval_read(tmp_path):
    """A design saved by Excel as "Unicode Text" (UTF-16 with a BOM) and a UTF-16 .bval were
    refused ("'utf-8' codec can't decode byte 0xff"); they are unambiguous and read now.
    (participants.tsv stays UTF-8 only, as BIDS requires.)"""
    from microvba.io.design_table import read_design_table
    from microvba.io.gradients import read_bvals

    text = "participant_id\tscore\tsex\r\nsub-01\t1.5\tF\r\nsub-02\t2.5\tM\r\n"
    for enc in ("utf-16", "utf-16-be"):
        p = tmp_path / f"design_{enc}.tsv"
        p.write_bytes(("\ufeff" if enc.endswith("be") else "").encode(enc) + text.encode(enc))
        df = read_design_table(p)
        assert list(df.index) == ["sub-01", "sub-02"] and df["score"].tolist() == [1.5, 2.5]
    b = tmp_path / "dwi.bval"
    b.write_bytes("0 1000 2000\n".encode("utf-16"))
    assert read_bvals(b).tolist() == [0.0, 1000.0, 2000.0]
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("participant_id\t\xe2ge\nsub-01\t3\n".encode("latin-1"))
    from microvba._validation import InputError

    with pytest.raises(InputError, match="cannot read the design as text"):
        read_design_table(bad)
