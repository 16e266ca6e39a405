"""decode_clusters: per-cluster tables and figures; missing database."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.decode import decode_clusters


def test_decode_clusters_writes_tables_and_figures(shared_data, map_cache, rois, roi_maps,
                                                   tmp_path):
    amyg = np.asarray(rois["amygdala"].dataobj) > 0
    motor = np.asarray(rois["A4ul"].dataobj) > 0
    labels = nib.Nifti1Image((amyg * 1 + motor * 2).astype(np.int16), rois["amygdala"].affine)
    # the smoothed amygdala map is ~0 in the motor cluster: map decoding only where it varies
    out = decode_clusters(labels, tmp_path, "sub-group_stat-ad", vocabularies=("lda50",),
                          data_dir=shared_data, stat_img=roi_maps["amygdala"],
                          cache_dir=map_cache, n_null=100)
    assert sorted(out) == [1, 2]
    assert "lda50_map_tsv" in out[1]
    for cid, files in out.items():
        assert {"lda50_tsv", "lda50_bar", "lda50_polar"} <= set(files)
        assert all(p.exists() and p.stat().st_size > 0 for p in files.values())
        assert files["lda50_tsv"].name == f"sub-group_stat-ad_cluster-{cid}_vocab-lda50_decoding.tsv"
    t1 = pd.read_table(out[1]["lda50_tsv"])
    t2 = pd.read_table(out[2]["lda50_tsv"])
    assert t1["feature"].iloc[0] == "26_emotional_amygdala_negative"
    assert t2["feature"].iloc[0] == "17_motor_cortex_hand"
    assert {"feature", "label", "log_odds", "p", "q", "p_null", "significant"} <= set(t1)
    assert (tmp_path / "sub-group_stat-ad_decoding.json").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_missing_database_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("MICROVBA_DATA", raising=False)
    labels = nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="microvba data fetch") as exc:
        decode_clusters(labels, tmp_path, "x", data_dir=tmp_path / "nowhere")
    assert "MICROVBA_DATA" in str(exc.value)
    assert len(exc.value.problems) == 2  # both databases reported at once


def test_decoders_dict_fits_each_vocabulary_once(shared_data, map_cache, rois, tmp_path,
                                                 decoder_fits):
    fits = decoder_fits
    amyg = np.asarray(rois["amygdala"].dataobj) > 0
    labels = nib.Nifti1Image(amyg.astype(np.int16), rois["amygdala"].affine)
    decoders: dict = {}
    kw = dict(vocabularies=("lda50",), data_dir=shared_data, cache_dir=map_cache, n_null=50,
              decoders=decoders)
    a = decode_clusters(labels, tmp_path / "a", "fa_pos", **kw)
    b = decode_clusters(labels, tmp_path / "b", "md_pos", **kw)
    assert len(fits) == 1 and len(decoders) == 1
    # the reused decoder gives the same table
    pd.testing.assert_frame_equal(pd.read_table(a[1]["lda50_tsv"]),
                                  pd.read_table(b[1]["lda50_tsv"]))
