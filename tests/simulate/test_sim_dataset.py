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
    return simulate_dataset(tmp_path_factory.mktemp("sim") / "bids", n_subjects=3, seed=1)


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
])
def test_bad_parameters_raise_input_error(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        simulate_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset_and_maps_bad_input_to_exit_2(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["simulate", str(out), "--n-subjects", "1", "--scheme", "multishell",
                 "-q"]) == 0
    assert (out / "sub-01" / "dwi" / "sub-01_dwi.nii.gz").exists()
    assert main(["simulate", str(tmp_path / "bad"), "--n-subjects", "0", "-q"]) == 2
    assert "n_subjects" in capsys.readouterr().err


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
