"""Feature maps: exact MKDA chi-square against a brute-force recomputation, dropped features,
cache, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from microvba._validation import InputError
from microvba.decode.database import Database, load_database
from microvba.decode.maps import feature_maps


def _toy_database(rng, n_studies=80, n_features=4) -> Database:
    n_peaks = rng.integers(1, 6, n_studies)
    peak_study = np.repeat(np.arange(n_studies), n_peaks)
    # peaks clustered around two centres so that some voxels are shared by many studies
    centres = np.array([[-30.0, -20.0, 10.0], [30.0, 10.0, 40.0]])
    xyz = centres[rng.integers(0, 2, peak_study.size)] + rng.normal(0, 6, (peak_study.size, 3))
    w = rng.uniform(0, 1, (n_studies, n_features))
    w[:, 0] = (xyz[np.searchsorted(peak_study, np.arange(n_studies)), 0] < 0) * 0.9 + 0.05
    w[:, 3] = np.where(rng.uniform(size=n_studies) < 0.75, 0.9, 0.1)  # > half: counted flipped
    return Database("toy", "0", "lda50", np.arange(n_studies), xyz, peak_study,
                    sp.csc_matrix(w), [f"f{i}" for i in range(n_features)],
                    [f"label {i}" for i in range(n_features)], {})


def test_maps_match_brute_force(rng, tmp_path):
    db = _toy_database(rng)
    fm = feature_maps(db, "lda50", kernel_mm=6.0, threshold=0.5, min_studies=5,
                      cache_dir=tmp_path)
    grid = fm.grid
    ijk_peaks = grid.mm_to_ijk(db.xyz)
    vox_ijk = np.argwhere(grid.mask)
    act = fm.activation.toarray()
    # incidence: voxel within 6 mm of a (rounded) peak of the study
    for s in rng.choice(db.n_studies, 10, replace=False):
        d = np.linalg.norm((vox_ijk[:, None, :] - ijk_peaks[db.peak_study == s][None]) * 2.0,
                           axis=2)
        np.testing.assert_array_equal(act[s], (d <= 6.0).any(axis=1))
    sel = db.weights.toarray() >= 0.5
    active_any = np.flatnonzero(act.any(axis=0))
    vox = rng.choice(active_any, 25, replace=False)
    for f in range(db.n_features):
        a = act[sel[:, f]][:, vox].sum(axis=0)
        b = act[~sel[:, f]][:, vox].sum(axis=0)
        n1, n2 = sel[:, f].sum(), (~sel[:, f]).sum()
        for j, v in enumerate(vox):
            table = [[a[j], n1 - a[j]], [b[j], n2 - b[j]]]
            chi2 = stats.chi2_contingency(table, correction=False)[0]
            z = np.sign(a[j] / n1 - b[j] / n2) * np.sqrt(chi2)
            assert fm.z_association[f, v] == pytest.approx(z, rel=1e-5, abs=1e-5)
        counts = act[sel[:, f]].sum(axis=0)
        mean = counts.mean()
        zu = np.sign(counts[vox] - mean) * np.sqrt((counts[vox] - mean) ** 2 * n1
                                                   / (mean * (n1 - mean)))
        np.testing.assert_allclose(fm.z_uniformity[f, vox], zu, rtol=1e-5, atol=1e-5)


def test_all_topics_get_a_map(lda_decoder):
    fm = lda_decoder.maps_
    assert len(fm.features) == 50 and fm.dropped.empty
    assert fm.z_association.shape == (50, fm.grid.n_voxels)
    assert fm.n_selected.min() >= 50
    assert np.isfinite(fm.fdr_z["association"]).sum() >= 40  # a few topics have no voxel


def test_threshold_selecting_every_study_is_reported(shared_data, map_cache, caplog):
    db = load_database("neurosynth", shared_data)
    with caplog.at_level(logging.WARNING, logger="microvba"):
        fm = feature_maps(db, "lda50", threshold=0.001, cache_dir=map_cache)
    every = fm.dropped[fm.dropped["reason"] == "threshold selects every study"]
    assert len(every) == 3 and (every["n_selected"] == db.n_studies).all()
    assert len(fm.features) == 47
    assert any("selects all or no studies" in r.getMessage() for r in caplog.records)


def test_cache_is_reused_and_keyed(shared_data, map_cache, lda_decoder):
    db = load_database("neurosynth", shared_data)
    again = feature_maps(db, "lda50", cache_dir=map_cache)
    assert again.path == lda_decoder.maps_.path
    np.testing.assert_array_equal(again.z_association[3], lda_decoder.maps_.z_association[3])
    assert (again.path / "maps.json").exists()
    other = feature_maps(db, "lda50", threshold=0.001, cache_dir=map_cache)
    assert other.path != again.path


def test_image_and_fdr(lda_decoder):
    fm = lda_decoder.maps_
    f = fm.features[26]
    img = fm.image(f)
    assert img.shape == fm.grid.shape
    thr = fm.image(f, fdr=True).get_fdata()
    kept = np.abs(thr[thr != 0])
    assert kept.size and kept.min() >= fm.fdr_z.loc[f, "association"]
    with pytest.raises(InputError, match="has no map"):
        fm.image("no such topic")


def test_argument_errors(shared_data, tmp_path):
    db = load_database("neurosynth", shared_data)
    with pytest.raises(InputError, match="provides the 'lda50' vocabulary"):
        feature_maps(db, "terms", cache_dir=tmp_path)
    with pytest.raises(InputError, match="whole number of mm"):
        feature_maps(db, "lda50", resolution=2.5, cache_dir=tmp_path)
    with pytest.raises(InputError, match="'min_studies' parameter must be a positive int"):
        feature_maps(db, "lda50", min_studies=0, cache_dir=tmp_path)
    with pytest.raises(InputError, match="'threshold' parameter must be in"):
        feature_maps(db, "lda50", threshold=2.0, cache_dir=tmp_path)


def test_neuroquery_term_maps_small(shared_data, map_cache):
    """The term pipeline end to end, on the most frequent terms only (fast)."""
    db = load_database("neuroquery", shared_data)
    fm = feature_maps(db, "terms", min_studies=1000, cache_dir=map_cache)
    assert 0 < len(fm.features) < 200
    assert len(fm.features) + len(fm.dropped) == db.n_features
    assert {"attention", "memory", "motor"} <= set(fm.features)
    assert (fm.dropped["reason"] == "threshold selects no study").sum() > 0
    z = np.asarray(fm.z_association[fm.index("motor")])
    peak = fm.grid.affine @ np.r_[np.argwhere(fm.grid.mask)[np.argmax(z)], 1]
    assert abs(peak[2]) < 80 and peak[2] > 20  # a dorsal (sensorimotor) maximum


@pytest.mark.slow
def test_all_neuroquery_term_maps(shared_data, tmp_path):
    """All terms with >= 50 studies (about 2,000 maps, 1-2 min): amygdala terms top an
    amygdala ROI."""
    from microvba.decode import Decoder
    from microvba.decode.grid import atlas_roi

    dec = Decoder("terms", data_dir=shared_data, cache_dir=tmp_path, n_null=200).fit()
    assert len(dec.maps_.features) > 1900
    atlas = shared_data / "atlases" / "brainnetome" / "BN_Atlas_246_1mm_spmgrid.nii.gz"
    table = dec.decode_roi(atlas_roi(atlas, [211, 212, 213, 214]))
    top = " ".join(table["feature"][:10])
    assert "amygdala" in top and "fear" in " ".join(table["feature"][:30])


def test_built_maps_equal_the_cache_entry(rng, tmp_path):
    """The FeatureMaps a build returns (from memory) equal those a later call loads from the
    cache entry: every attribute, the dropped table's dtypes included."""
    import pandas as pd

    db = _toy_database(rng, n_features=6)
    w = db.weights.toarray()
    w[:, 4] = 0.0  # selects no study
    w[:, 5] = np.where(np.arange(db.n_studies) < 3, 0.9, 0.1)  # fewer than min_studies
    db.weights = sp.csc_matrix(w)
    db.features, db.labels = [f"f{i}" for i in range(6)], [f"label\t{i}" for i in range(6)]
    built = feature_maps(db, "lda50", threshold=0.5, min_studies=5, cache_dir=tmp_path)
    loaded = feature_maps(db, "lda50", threshold=0.5, min_studies=5, cache_dir=tmp_path)
    assert built.path == loaded.path
    assert (built.features, built.labels) == (loaded.features, loaded.labels)
    assert len(built.features) == 4 and len(built.dropped) == 2
    for name in ("n_selected", "z_association", "z_uniformity", "z_mean", "z_norm", "peaks"):
        a, b = np.asarray(getattr(built, name)), np.asarray(getattr(loaded, name))
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("weights", "selection"):
        a, b = getattr(built, name), getattr(loaded, name)
        assert a.shape == b.shape and a.dtype == b.dtype and (a != b).nnz == 0, name
    pd.testing.assert_frame_equal(built.dropped, loaded.dropped)
    assert set(built.dropped["reason"]) == {"threshold selects no study",
                                            "fewer than min_studies=5 selected studies"}
    assert built.parameters == loaded.parameters


def test_tsv_writer_equals_pandas(rng, tmp_path):
    """features.tsv / dropped.tsv are written without pandas, byte for byte as
    ``DataFrame.to_csv(sep="\\t", index=False)``: floats of every magnitude (repr switches
    to exponents), NaN, signed zeros, integers, strings that need quoting."""
    import pandas as pd

    from microvba.decode.maps import _write_tsv

    x = rng.standard_normal(300) * 10.0 ** rng.integers(-320, 300, 300)
    x[:12] = [0.0, -0.0, np.nan, 1e-5, 1e-4, 1e15, 1e16, 123456789.0, 0.1 + 0.2, -1 / 3,
              5e-324, 1.7976931348623157e308]
    text = ["a", "", "tab\there", 'quote"d', "new\nline", "ünïcode", "x y", "'single'",
            "carriage\rreturn", " lead", "trail ", "comma,"]
    n = len(text)
    cols = {"feature": np.asarray(text), "label": list(reversed(text)),
            "n_selected": rng.integers(-5, 10**12, n), "z_mean": x[:n],
            "z_norm": x[n:2 * n].astype(np.float64), "reason": np.asarray(text, dtype=object)}
    for name, c in (("full", cols), ("empty", {k: v[:0] for k, v in cols.items()})):
        ours, ref = tmp_path / f"{name}.tsv", tmp_path / f"{name}-pandas.tsv"
        _write_tsv(ours, c)
        pd.DataFrame(c).to_csv(ref, sep="\t", index=False)
        assert ours.read_bytes() == ref.read_bytes(), name
    many = {"v": x}
    _write_tsv(tmp_path / "x.tsv", many)
    pd.DataFrame(many).to_csv(tmp_path / "x-pandas.tsv", sep="\t", index=False)
    assert (tmp_path / "x.tsv").read_bytes() == (tmp_path / "x-pandas.tsv").read_bytes()


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.9])
def test_kept_selection_equals_scipy(rng, threshold):
    """The build's selection, computed on the CSC arrays in numpy (scipy is imported only
    after the child process starts), equals ``_selection`` on the scipy matrix: kept
    features, dropped table, selected studies (features selecting none, all, few)."""
    from microvba.decode.maps import _drop_table, _kept_selection, _selection

    db = _toy_database(rng, n_studies=120, n_features=6)
    w = db.weights.toarray()
    w[:, 1] = 0.0
    w[:, 2] = 0.95
    w[rng.uniform(size=w.shape) < 0.3] = 0.0
    db.weights = sp.csc_matrix(w)
    keep, dropped, sel = _kept_selection(db, threshold, 5)
    full = _selection(sp.csc_matrix(db.weights), threshold)
    ref_keep, ref_dropped = _drop_table(db, np.diff(full.indptr), 5)
    np.testing.assert_array_equal(keep, ref_keep)
    for k in ref_dropped:
        np.testing.assert_array_equal(dropped[k], ref_dropped[k])
    ref = _selection(sp.csc_matrix(db.weights)[:, np.flatnonzero(keep)], threshold)
    assert 0 < keep.sum() < 6
    np.testing.assert_array_equal(np.diff(sel.indptr), np.diff(ref.indptr))
    np.testing.assert_array_equal(sel.dense(0, sel.n_features), ref.toarray())
    np.testing.assert_array_equal(sel.dense(1, sel.n_features), ref.toarray()[:, 1:])
