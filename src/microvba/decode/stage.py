"""Group-stage step: decode every cluster of a label image, write tables and figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .._logging import get_logger
from .._provenance import atomic_path, make_sidecar, save_figure, write_json
from .._validation import InputError, ProblemCollector, check_choice
from ..io import derivatives
from .database import VOCABULARY_DATABASE, database_files
from .decoder import Decoder
from .figures import bar_chart, polar_plot
from .grid import load_image
from .maps import VOCABULARIES

log = get_logger(__name__)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Atomically write a decoding table as TSV."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return Path(path)


def _check_databases(vocabularies: Sequence[str], data_dir: str | Path | None) -> None:
    problems = ProblemCollector()
    for v in vocabularies:
        check_choice("vocabulary", v, VOCABULARIES)
        try:
            database_files(VOCABULARY_DATABASE[v], data_dir)
        except InputError as exc:
            problems.extend(exc)
    problems.raise_if_any()


def decode_clusters(label_img: str | Path | nib.Nifti1Image, out_dir: str | Path, prefix: str,
                    vocabularies: Sequence[str] = ("lda50", "terms"),
                    data_dir: str | Path | None = None,
                    stat_img: str | Path | nib.Nifti1Image | None = None,
                    cache_dir: str | Path | None = None,
                    n_null: int = 1000, seed: int = 0,
                    decoders: dict | None = None) -> dict[int, dict[str, Path]]:
    """Decode each cluster (nonzero label) of ``label_img`` against each vocabulary.

    Writes, per cluster ``id`` and vocabulary ``v``, into ``out_dir``:
    ``{prefix}_cluster-{id}_vocab-{v}_decoding.tsv`` (ROI association table),
    ``..._bar.png`` and ``..._polar.png``; with ``stat_img``, also
    ``..._mapdecoding.tsv`` (the map masked to the cluster, correlated with the association
    maps). A ``{prefix}_decoding.json`` sidecar records parameters and versions, each
    cluster's voxels outside the brain mask (``ClusterVoxels``) and the features without a
    map (``DroppedFeatures``), which are listed in
    ``{prefix}_vocab-{v}_dropped-features.tsv`` (feature, n_selected, reason, label).

    ``decoders``: a dict the caller keeps across calls (e.g. one per metric of a group
    analysis): fitted decoders are stored in it and reused, instead of loading the
    association maps again for every call.

    Returns
    -------
    dict
        ``{cluster_id: {"<v>_tsv" | "<v>_bar" | "<v>_polar" | "<v>_map_tsv": Path}}``.

    Raises
    ------
    InputError
        When a database is missing (the fix says to run ``microvba data fetch`` or set
        ``MICROVBA_DATA``), or an image cannot be read.
    """
    _check_databases(vocabularies, data_dir)
    labels_img = load_image(label_img, "cluster label")
    labels = np.rint(np.nan_to_num(np.asarray(labels_img.dataobj, dtype=np.float64)))
    ids = [int(i) for i in np.unique(labels) if i != 0]
    stat = load_image(stat_img, "statistic map") if stat_img is not None else None
    out_dir = Path(out_dir)
    outputs: dict[int, dict[str, Path]] = {i: {} for i in ids}
    if not ids:
        log.info("no cluster to decode in %s", label_img)
        return outputs
    thresholds: dict[str, float] = {}
    kernel_mm = 6.0
    outside: dict[int, dict[str, float]] = {}
    dropped: dict[str, dict] = {}
    for vocab in vocabularies:
        key = (vocab, str(data_dir), str(cache_dir), n_null, seed)
        dec = decoders.get(key) if decoders is not None else None
        if dec is None:
            dec = Decoder(vocab, data_dir=data_dir, cache_dir=cache_dir, n_null=n_null,
                          seed=seed).fit()
            if decoders is not None:
                decoders[key] = dec
        thresholds[vocab], kernel_mm = dec.threshold_, float(dec.kernel_mm)
        lost = dec.maps_.dropped
        dropped[vocab] = {"n": int(len(lost)), "table": None}
        if len(lost):
            path = write_table(lost[list(derivatives.DROPPED_FEATURE_COLUMNS)],
                               out_dir / derivatives.dropped_features_name(
                                   derivatives.decoding_stem(prefix, vocab)))
            dropped[vocab]["table"] = path.name
        for cid in ids:
            mask = nib.Nifti1Image((labels == cid).astype(np.uint8), labels_img.affine)
            stem = derivatives.decoding_stem(prefix, vocab, cid)
            table = dec.decode_roi(mask)
            outside[cid] = {"voxels_decoded": table.attrs["roi_voxels"],
                            "voxels_outside_brain_mask": table.attrs["roi_voxels_outside_mask"],
                            "fraction_outside_brain_mask":
                                round(table.attrs["roi_fraction_outside_mask"], 6)}
            files = outputs[cid]
            files[f"{vocab}_tsv"] = write_table(
                table, out_dir / derivatives.decoding_table_name(stem))
            for figure, draw in (("bar", bar_chart), ("polar", polar_plot)):
                files[f"{vocab}_{figure}"] = save_figure(
                    draw(table), out_dir / derivatives.decoding_figure_name(stem, figure),
                    dpi=150)
            if stat is not None:
                data = np.asarray(stat.dataobj, dtype=np.float32)
                inside = _resampled_mask(labels == cid, labels_img, stat)
                values = np.where(inside, data, 0.0).astype(np.float32)
                if np.ptp(values) == 0:
                    log.warning("cluster %d: the statistic map is constant inside it; "
                                "no map decoding", cid)
                else:
                    files[f"{vocab}_map_tsv"] = write_table(
                        dec.decode_map(nib.Nifti1Image(values, stat.affine)),
                        out_dir / derivatives.decoding_table_name(stem,
                                                                  derivatives.MAP_DECODING))
            n_sig = int(table["significant"].sum())
            log.info("cluster %d, %s: top %s (%d significant)", cid, vocab,
                     table["feature"].iloc[0], n_sig)
    params = {"vocabularies": list(vocabularies), "n_null": n_null, "seed": seed,
              "kernel_mm": kernel_mm, "kernel_radius": kernel_mm, "thresholds": thresholds,
              "clusters": ids, "stat_img": str(stat_img) if stat_img is not None else None}
    write_json(out_dir / derivatives.decoding_sidecar_name(prefix),
               make_sidecar(params, ClusterVoxels={str(k): v for k, v in outside.items()},
                            DroppedFeatures=dropped))
    return outputs


def _resampled_mask(mask: np.ndarray, mask_img: nib.Nifti1Image,
                    target: nib.Nifti1Image) -> np.ndarray:
    """``mask`` (on ``mask_img``'s grid) on ``target``'s grid, nearest neighbour."""
    if mask.shape == target.shape[:3] and np.allclose(mask_img.affine, target.affine):
        return mask
    from nilearn.image import resample_to_img

    img = nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine)
    res = resample_to_img(img, target, interpolation="nearest", force_resample=True,
                          copy_header=True)
    return np.asarray(res.dataobj) > 0
