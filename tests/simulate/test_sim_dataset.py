"""The small simulated BIDS dataset and the ``microvba simulate`` command."""

import nibabel as nib
import numpy as np
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.io.derivatives import SPACE_NATIVE, map_path
from microvba.simulate import simulate_dataset


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("sim") / "bids", n_subjects=3, seed=1,
                            anatomy="box")


def test_dataset_is_valid_bids(small):
    from microvba.io.bids import discover, validate_dataset

    subjects = discover(small)
    assert [s.label for s in subjects] == ["01", "02", "03"]
    validate_dataset(small, subjects=subjects)  # raises InputError on any problem
    desc = (small / "dataset_description.json").read_text()
    assert '"BIDSVersion"' in desc and '"DatasetType": "raw"' in desc
    header = (small / "participants.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["participant_id", "resilience", "age", "sex", "education", "severity"]


def test_shapes_bvals_and_signal(small):
    img = nib.load(small / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
    assert img.shape == (12, 12, 8, 515)
    assert img.get_data_dtype() == np.int16
    bvals = np.loadtxt(small / "sub-01" / "dwi" / "sub-01_dwi.bval")
    bvecs = np.loadtxt(small / "sub-01" / "dwi" / "sub-01_dwi.bvec")
    assert bvals.shape == (515,) and bvecs.shape == (3, 515)
    assert bvals.max() == pytest.approx(4000)
    data = np.asarray(img.dataobj, dtype=float)
    centre = data[4:8, 4:8, 3:5]
    b0 = centre[..., bvals == 0].mean()
    assert 700 < b0 < 2000  # S0 of tissue, ~1000
    assert centre[..., bvals > 3000].mean() < 0.4 * b0  # diffusion attenuates


def test_truth_maps_are_plausible(small):
    icvf = nib.load(map_path(small / "derivatives" / "truth", "01", "icvf",
                             space=SPACE_NATIVE)).get_fdata()
    fa = nib.load(map_path(small / "derivatives" / "truth", "01", "fa",
                           space=SPACE_NATIVE)).get_fdata()
    inside = icvf > 0
    assert 0.2 < icvf[inside].mean() < 0.7
    assert 0.0 < fa[inside].mean() < 0.8


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = simulate_dataset(tmp_path / "a", n_subjects=1, scheme="multishell", shape=(6, 6, 4),
                         seed=3)
    b = simulate_dataset(tmp_path / "b", n_subjects=1, scheme="multishell", shape=(6, 6, 4),
                         seed=3)
    c = simulate_dataset(tmp_path / "c", n_subjects=1, scheme="multishell", shape=(6, 6, 4),
                         seed=4)

    def data(root):
        return np.asarray(nib.load(root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz").dataobj)

    np.testing.assert_array_equal(data(a), data(b))
    assert (a / "participants.tsv").read_text() == (b / "participants.tsv").read_text()
    assert not np.array_equal(data(a), data(c))
    assert data(a).shape == (6, 6, 4, 186)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_subjects": 0}, "'n_subjects' parameter must be a positive int"),
    ({"scheme": "dsi1000"}, "'scheme' parameter must be one of"),
    ({"shape": (12, 2, 8)}, "shape must be three sizes"),
    ({"noise_snr": 0.0}, "'noise_snr' parameter must be in"),
    ({"anatomy": "sphere"}, "'anatomy' parameter must be one of"),
    ({"anatomy": "brain", "shape": (12, 12, 8)}, "shape applies to the 'box' anatomy only"),
    ({"resolution": 0.5}, "'resolution' parameter must be in"),
])
def test_bad_parameters_raise_input_error(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        simulate_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset_and_maps_bad_input_to_exit_2(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["simulate", str(out), "--n-subjects", "1", "--scheme", "multishell",
                 "--resolution", "8", "-q"]) == 0
    img = nib.load(out / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
    assert nib.affines.voxel_sizes(img.affine) == pytest.approx([8, 8, 8])
    box = tmp_path / "box"
    assert main(["simulate", str(box), "--n-subjects", "1", "--scheme", "multishell", "--box",
                 "-q"]) == 0
    assert nib.load(box / "sub-01" / "dwi" / "sub-01_dwi.nii.gz").shape == (12, 12, 8, 186)
    assert main(["simulate", str(tmp_path / "bad"), "--n-subjects", "0", "-q"]) == 2
    assert "--n-subjects" in capsys.readouterr().err  # the option's command-line name


def test_rerun_replaces_an_earlier_simulation_but_never_foreign_data(tmp_path):
    root = simulate_dataset(tmp_path / "d", n_subjects=3, shape=(5, 5, 4), scheme="multishell")
    simulate_dataset(root, n_subjects=2, shape=(5, 5, 4), scheme="multishell")
    assert sorted(p.name for p in root.glob("sub-*")) == ["sub-01", "sub-02"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a microvba simulated dataset"):
        simulate_dataset(foreign, n_subjects=1, shape=(5, 5, 4))
    assert (foreign / "notes.txt").read_text() == "keep"


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("brain") / "bids", n_subjects=2,
                            scheme="multishell", resolution=6.0, seed=1)


def test_default_anatomy_is_a_whole_brain_in_the_template_field_of_view(brain):
    """The default dataset covers a brain (what MNI normalisation and its QC need)."""
    from microvba.registration.template import load_template

    img = nib.load(brain / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
    assert img.get_data_dtype() == np.int16 and img.shape[3] == 186
    assert nib.affines.voxel_sizes(img.affine) == pytest.approx([6, 6, 6])
    icvf_img = nib.load(map_path(brain / "derivatives" / "truth", "01", "icvf",
                                 space=SPACE_NATIVE))
    inside = icvf_img.get_fdata() > 0
    volume_ml = inside.sum() * 6.0**3 / 1000
    tpl = load_template(2.0)
    tpl_ml = (np.asarray(tpl.brain_mask.dataobj) > 0).sum() * 8.0 / 1000
    assert 0.8 * tpl_ml < volume_ml < 1.2 * tpl_ml  # a whole brain, not a small box
    # extent of the brain in mm along each axis: that of an adult brain
    ijk = np.argwhere(inside)
    extent = (ijk.max(0) - ijk.min(0) + 1) * 6.0
    assert np.all(extent > 110) and np.all(extent < 200), extent
    # it sits where the template's brain is (random pose of a few mm only)
    centre = nib.affines.apply_affine(img.affine, ijk.mean(0))
    t_ijk = np.argwhere(np.asarray(tpl.brain_mask.dataobj) > 0)
    t_centre = nib.affines.apply_affine(tpl.affine, t_ijk.mean(0))
    assert np.linalg.norm(centre - t_centre) < 15
    # tissue contrast: white matter is more anisotropic than the rest
    fa = nib.load(map_path(brain / "derivatives" / "truth", "01", "fa",
                           space=SPACE_NATIVE)).get_fdata()[inside]
    assert np.percentile(fa, 90) > 2 * np.percentile(fa, 10)


def test_brain_subjects_differ_in_pose_and_shape(brain):
    a = nib.load(brain / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
    b = nib.load(brain / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    assert a.shape != b.shape or not np.allclose(a.affine, b.affine) or not np.array_equal(
        np.asarray(a.dataobj[..., 0]), np.asarray(b.dataobj[..., 0]))
    # b=0 signal in the brain, noise around it, zero far outside
    data = np.asarray(a.dataobj[..., 0], dtype=float)
    icvf = nib.load(map_path(brain / "derivatives" / "truth", "01", "icvf",
                             space=SPACE_NATIVE)).get_fdata()
    assert 500 < data[icvf > 0].mean() < 2500
    assert data[0, 0, 0] == 0
