"""Database loading: counts, Talairach conversion, tf-idf."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from microvba._validation import InputError
from microvba.decode.database import (
    load_database,
    load_vocabulary,
    resolve_data_dir,
    tal2mni,
    tfidf,
)


def test_neurosynth_counts(shared_data):
    db = load_database("neurosynth", shared_data)
    assert (db.name, db.version, db.vocabulary) == ("neurosynth", "7", "lda50")
    assert db.n_studies == 14371 and db.xyz.shape == (507891, 3)
    assert db.weights.shape == (14371, 50) and db.n_features == 50
    assert np.all(np.diff(db.peak_study) >= 0)
    assert "amygdala" in db.labels[26] and db.features[26].startswith("26_emotional")


def test_talairach_peaks_converted(shared_data):
    db = load_database("neurosynth", shared_data)
    folder = shared_data / "neurosynth"
    meta = pd.read_table(folder / "data-neurosynth_version-7_metadata.tsv.gz")
    raw = pd.read_table(folder / "data-neurosynth_version-7_coordinates.tsv.gz")
    tal_id = meta.loc[meta["space"] == "TAL", "id"].iloc[0]
    mni_id = meta.loc[meta["space"] == "MNI", "id"].iloc[0]
    for sid, converted in ((tal_id, True), (mni_id, False)):
        row = int(np.flatnonzero(db.study_ids == sid)[0])
        ours = db.xyz[db.peak_study == row]
        theirs = raw.loc[raw["id"] == sid, ["x", "y", "z"]].to_numpy(float)
        expected = tal2mni(theirs) if converted else theirs
        np.testing.assert_allclose(ours, expected)
        assert converted == (not np.allclose(ours, theirs))


def test_tal2mni_matches_nimare(rng):
    nimare_utils = pytest.importorskip("nimare.utils")
    xyz = rng.uniform(-70, 70, size=(20, 3))
    np.testing.assert_allclose(tal2mni(xyz), nimare_utils.tal2mni(xyz), atol=1e-10)


def test_tfidf_matches_sklearn(rng):
    text = pytest.importorskip("sklearn.feature_extraction.text")
    counts = sp.random(40, 12, density=0.3, random_state=1, data_rvs=lambda n: rng.integers(
        1, 5, n)).tocsr()
    expected = text.TfidfTransformer(norm="l2", smooth_idf=True).fit_transform(counts)
    np.testing.assert_allclose(tfidf(counts).toarray(), expected.toarray(), atol=1e-12)


def test_neuroquery_terms(shared_data):
    db = load_vocabulary("terms", shared_data)
    assert (db.name, db.vocabulary, db.n_studies, db.n_features) == ("neuroquery", "terms",
                                                                      13459, 7547)
    for term in ("emotion", "reward", "working memory", "cognitive control", "pain",
                 "memory", "attention"):
        assert term in db.features
    norms = np.sqrt(np.asarray(db.weights.multiply(db.weights).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[norms > 0], 1.0)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROVBA_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("MICROVBA_DATA")
    assert resolve_data_dir().name == "microvba"


def test_missing_database_says_fetch(tmp_path):
    with pytest.raises(InputError, match="microvba data fetch"):
        load_database("neurosynth", tmp_path)


def test_unknown_database():
    with pytest.raises(InputError, match="must be one of"):
        load_database("brainmap")
