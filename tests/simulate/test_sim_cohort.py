"""The demo cohort: real anatomy, planted effects with the study's exact r, valid BIDS."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.simulate import STUDY_EFFECTS, simulate_cohort
from microvba.simulate.phenotype import covariate_matrix, partial_r

RES = 8.0  # coarse grid: the same code path as the demo, in seconds


@pytest.fixture(scope="module")
def truth_cohort(tmp_path_factory, shared_data):
    return simulate_cohort(tmp_path_factory.mktemp("cohort") / "bids", n_subjects=24,
                           resolution=RES, seed=5, data_dir=shared_data, write_dwi=False)


def test_ground_truth_lists_the_five_findings(truth_cohort):
    truth = json.loads((truth_cohort / "code" / "ground_truth.json").read_text())
    effects = truth["effects"]
    assert [(e["metric"], e["code"], e["r"]) for e in effects] == [
        (e.metric, e.code, e.r) for e in STUDY_EFFECTS]
    a7r = next(e for e in effects if e["code"] == "A7r")
    assert a7r["hemisphere"] == "L" and a7r["label_ids"] == [125]
    np.testing.assert_allclose(a7r["mni_com_mm"], [-16.1, -59.4, 62.0], atol=1.0)
    for e in effects:
        assert e["truth_r"] == pytest.approx(e["r"], abs=1e-4)
        assert e["sign"] == ("+" if e["r"] > 0 else "-")
    assert truth["parameters"]["n_subjects"] == 24 and truth["parameters"]["seed"] == 5
    assert {s["metric"] for s in truth["secondary"]} <= {"fa", "md", "rd", "ad", "icvf",
                                                         "odi", "isovf"}


def test_truth_maps_carry_the_exact_partial_r(truth_cohort):
    folder = truth_cohort / "derivatives" / "truth"
    participants = pd.read_csv(truth_cohort / "participants.tsv", sep="\t")
    score = participants["resilience"].to_numpy(float)
    design = covariate_matrix(participants)
    seg = np.asarray(nib.load(next(folder.glob("*desc-planted_dseg.nii.gz"))).dataobj)
    for k, eff in enumerate(STUDY_EFFECTS, start=1):
        img = nib.load(next(folder.glob(f"*param-{eff.metric}_desc-truth_dwimap.nii.gz")))
        assert img.shape[3] == len(participants)
        values = np.asarray(img.dataobj)[seg == k]  # (n_voxels, n_subjects)
        assert values.shape[0] > 0
        r = partial_r(values.mean(axis=0), score, design)
        assert r == pytest.approx(eff.r, abs=1e-4)


def test_nothing_elsewhere(truth_cohort):
    """Outside the planted regions no true NODDI map correlates with resilience at all."""
    from scipy import ndimage

    folder = truth_cohort / "derivatives" / "truth"
    participants = pd.read_csv(truth_cohort / "participants.tsv", sep="\t")
    score = participants["resilience"].to_numpy(float)
    design = covariate_matrix(participants)
    truth = json.loads((truth_cohort / "code" / "ground_truth.json").read_text())
    seg_img = nib.load(next(folder.glob("*desc-planted_dseg.nii.gz")))
    seg = np.asarray(seg_img.dataobj)
    # the effects taper over the simulation voxels partly inside a label (at 8 mm a small
    # label may have no voxel half inside): leave a margin around every planted region
    margin = int(np.ceil(3 * RES / nib.affines.voxel_sizes(seg_img.affine).min()))
    outside = ~ndimage.binary_dilation(seg > 0, iterations=margin)
    xyz = nib.affines.apply_affine(seg_img.affine, np.indices(seg.shape).reshape(3, -1).T)
    for eff in truth["effects"]:
        near = np.linalg.norm(xyz - np.asarray(eff["mni_com_mm"]), axis=1) < 3 * RES
        outside &= ~near.reshape(seg.shape)
    for metric in ("icvf", "odi", "isovf"):
        data = np.asarray(nib.load(next(folder.glob(f"*param-{metric}_desc-truth*"))).dataobj)
        varying = (data.std(axis=3) > 1e-6) & outside
        r = partial_r(data[varying].T, score, design)
        # exactly 0 except where a value was clipped at a bound (CSF isovf = 1) and in the
        # few coarse voxels a planted tensor effect's taper reaches (secondary NODDI effect)
        assert np.median(np.abs(r)) < 1e-4
        assert np.percentile(np.abs(r), 99) < 0.02
        assert np.mean(np.abs(r) > 0.15) < 0.002
        for k, eff in enumerate(truth["effects"], start=1):
            if eff["metric"] == metric:
                inside = data[seg == k]
                assert abs(partial_r(inside.mean(axis=0), score, design)) > 0.2
    # secondary effects come with the planted ones, in the same regions: physics couples
    # the metrics (MD moves with AD, ICVF lowers MD; an excess tensor moves the NODDI fit)
    by_code = {(s["code"], s["metric"]): s["truth_r"] for s in truth["secondary"]}
    assert by_code[("A23c", "md")] > 0.1  # MD = (AD + 2 RD) / 3 rises with AD
    assert by_code[("A7r", "md")] < -0.1  # more neurites, less free diffusion


def test_cohort_dwi_is_valid_bids(tmp_path, shared_data):
    from microvba.io.bids import discover, validate_dataset

    root = simulate_cohort(tmp_path / "dwi", n_subjects=8, resolution=RES, seed=1,
                           data_dir=shared_data, write_truth_maps=False)
    subjects = discover(root)
    assert len(subjects) == 8
    validate_dataset(root, subjects=subjects)
    img = nib.load(subjects[0].dwi)
    bvals = np.loadtxt(subjects[0].bval)
    assert img.ndim == 4 and img.shape[3] == bvals.size == 258  # half-sphere DSI-515
    assert bvals.max() == pytest.approx(4000)
    data = np.asarray(img.dataobj, dtype=float)
    b0 = data[..., bvals == 0][..., 0]
    assert 500 < np.percentile(b0[b0 > 0], 50) < 2500
    # each subject has its own pose: native grids differ
    affines = {tuple(np.round(nib.load(s.dwi).affine[:3, 3], 3)) for s in subjects}
    shapes = {nib.load(s.dwi).shape for s in subjects}
    assert len(affines) > 1 or len(shapes) > 1
    # same seed, same cohort, also when simulated by worker processes
    again = simulate_cohort(tmp_path / "dwi2", n_subjects=8, resolution=RES, seed=1,
                            data_dir=shared_data, write_truth_maps=False, n_jobs=2)
    assert (root / "participants.tsv").read_text() == (again / "participants.tsv").read_text()
    assert ((root / "code" / "ground_truth.json").read_text()
            == (again / "code" / "ground_truth.json").read_text())
    for label in ("01", "08"):
        rel = f"sub-{label}/dwi/sub-{label}_dwi.nii.gz"
        np.testing.assert_array_equal(np.asarray(nib.load(root / rel).dataobj),
                                      np.asarray(nib.load(again / rel).dataobj))


def test_cohort_input_errors(tmp_path, shared_data):
    with pytest.raises(InputError, match="at least 8 subjects"):
        simulate_cohort(tmp_path / "a", n_subjects=5, data_dir=shared_data)
    with pytest.raises(InputError, match="Brainnetome atlas"):
        simulate_cohort(tmp_path / "b", n_subjects=8, data_dir=tmp_path / "nowhere")
    with pytest.raises(InputError, match="'scheme' parameter"):
        simulate_cohort(tmp_path / "c", n_subjects=8, scheme="bad", data_dir=shared_data)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_effect_scale_plants_scaled_r_exactly(tmp_path, shared_data):
    root = simulate_cohort(tmp_path / "scaled", n_subjects=24, resolution=RES, seed=5,
                           data_dir=shared_data, write_dwi=False, write_truth_maps=False,
                           effect_scale=3.0)
    truth = json.loads((root / "code" / "ground_truth.json").read_text())
    assert truth["parameters"]["effect_scale"] == 3.0
    for e, study in zip(truth["effects"], STUDY_EFFECTS, strict=True):
        assert e["study_r"] == study.r
        assert e["r"] == pytest.approx(np.tanh(3.0 * np.arctanh(study.r)))
        assert e["truth_r"] == pytest.approx(e["r"], abs=1e-4)


def test_effect_scale_too_strong_is_refused_before_writing(tmp_path, shared_data):
    with pytest.raises(InputError, match="effect_scale"):
        simulate_cohort(tmp_path / "strong", n_subjects=8, data_dir=shared_data,
                        write_dwi=False, effect_scale=3.5)
    assert not (tmp_path / "strong").exists()
