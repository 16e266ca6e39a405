"""Group-stage step: decode clusters (or the distinct regions they form), write tables and
figures through :mod:`microvba.decode.writer`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from .._logging import get_logger
from .._provenance import make_sidecar, write_json
from .._validation import InputError, ProblemCollector, check_choice
from ..io import derivatives as D
from .database import VOCABULARY_DATABASE, database_files
from .decoder import Decoder
from .grid import load_image
from .maps import VOCABULARIES
from .regions import MIN_OVERLAP, Cluster, Region, merge_clusters, write_regions
from .writer import dropped_summary, roi_summary, write_decoding, write_dropped, write_table

log = get_logger(__name__)

__all__ = ["decode_clusters", "decode_regions", "write_table"]


def _check_databases(vocabularies: Sequence[str], data_dir: str | Path | None) -> None:
    problems = ProblemCollector()
    for v in vocabularies:
        check_choice("vocabulary", v, VOCABULARIES)
        try:
            database_files(VOCABULARY_DATABASE[v], data_dir)
        except InputError as exc:
            problems.extend(exc)
    problems.raise_if_any()


def _fitted(vocab: str, decoders: dict | None, data_dir, cache_dir, n_null: int,
            seed: int) -> Decoder:
    """A fitted decoder, from ``decoders`` when the caller keeps one for these settings."""
    key = (vocab, str(data_dir), str(cache_dir), n_null, seed)
    dec = decoders.get(key) if decoders is not None else None
    if dec is None:
        dec = Decoder(vocab, data_dir=data_dir, cache_dir=cache_dir, n_null=n_null,
                      seed=seed).fit()
        if decoders is not None:
            decoders[key] = dec
    return dec


def _decode_masks(masks: dict[int, tuple[np.ndarray, np.ndarray, nib.Nifti1Image | None]],
                  out_dir: Path, prefix: str, vocabularies: Sequence[str],
                  data_dir, cache_dir, n_null: int, seed: int, decoders: dict | None,
                  stat_name: str | None, extra: dict | None = None
                  ) -> dict[int, dict[str, Path]]:
    """Decode each ``{id: (mask, affine, stat image or None)}``; write
    ``{prefix}_cluster-{id}_vocab-{v}_*`` files and the ``{prefix}_decoding.json`` sidecar."""
    outputs: dict[int, dict[str, Path]] = {i: {} for i in masks}
    # each cluster's mask image and its statistic map inside it: built once, decoded per
    # vocabulary
    rois = {cid: nib.Nifti1Image(mask.astype(np.uint8), affine)
            for cid, (mask, affine, _) in masks.items()}
    stat_maps = {cid: _stat_inside(mask, rois[cid], stat, cid)
                 for cid, (mask, _, stat) in masks.items()}
    thresholds: dict[str, float] = {}
    kernel_mm = 6.0
    outside: dict[int, dict[str, float]] = {}
    dropped: dict[str, dict] = {}
    for vocab in vocabularies:
        dec = _fitted(vocab, decoders, data_dir, cache_dir, n_null, seed)
        thresholds[vocab], kernel_mm = dec.threshold_, float(dec.kernel_mm)
        lost = dec.maps_.dropped
        path = write_dropped(lost, out_dir / D.decoding_stem(prefix, vocab))
        dropped[vocab] = {k: v for k, v in dropped_summary(lost, path).items()
                          if k != "reasons"}
        for cid in masks:
            stem = out_dir / D.decoding_stem(prefix, vocab, cid)
            table = dec.decode_roi(rois[cid])
            outside[cid] = roi_summary(table)
            files = outputs[cid]
            written = write_decoding(table, stem, D.DECODING)
            files[f"{vocab}_tsv"], files[f"{vocab}_bar"] = written["tsv"], written["bar"]
            files[f"{vocab}_polar"] = written["polar"]
            if stat_maps[cid] is not None:
                table_map = dec.decode_map(stat_maps[cid])
                files[f"{vocab}_map_tsv"] = write_decoding(
                    table_map, stem, D.MAP_DECODING, figures=False)["tsv"]
            n_sig = int(table["significant"].sum())
            log.info("%s cluster %d, %s: top %s (%d significant)", prefix, cid, vocab,
                     table["feature"].iloc[0], n_sig)
    params = {"vocabularies": list(vocabularies), "n_null": n_null, "seed": seed,
              "kernel_mm": kernel_mm, "kernel_radius": kernel_mm, "thresholds": thresholds,
              "clusters": list(masks), "stat_img": stat_name}
    write_json(out_dir / D.decoding_sidecar_name(prefix),
               make_sidecar(params, ClusterVoxels={str(k): v for k, v in outside.items()},
                            DroppedFeatures=dropped, **(extra or {})))
    return outputs


def _stat_inside(mask: np.ndarray, mask_img: nib.Nifti1Image,
                 stat: nib.Nifti1Image | None, cid: int) -> nib.Nifti1Image | None:
    """The statistic map inside one cluster (zero outside) for map decoding; None without a
    statistic map or where it is constant inside the cluster (logged)."""
    if stat is None:
        return None
    data = np.asarray(stat.dataobj, dtype=np.float32)
    values = np.where(_resampled_mask(mask, mask_img, stat), data, 0.0).astype(np.float32)
    if np.ptp(values) == 0:
        log.warning("cluster %d: the statistic map is constant inside it; no map decoding", cid)
        return None
    return nib.Nifti1Image(values, stat.affine)


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
    The files are written by :mod:`microvba.decode.writer`, as ``microvba decode`` does.

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
    if not ids:
        log.info("no cluster to decode in %s", label_img)
        return {}
    affine = np.asarray(labels_img.affine)
    masks = {cid: (labels == cid, affine, stat) for cid in ids}
    return _decode_masks(masks, Path(out_dir), prefix, vocabularies, data_dir, cache_dir,
                         n_null, seed, decoders,
                         str(stat_img) if stat_img is not None else None)


def decode_regions(clusters: Sequence[Cluster], out_dir: str | Path,
                   vocabularies: Sequence[str] = ("lda50", "terms"),
                   data_dir: str | Path | None = None,
                   cache_dir: str | Path | None = None, n_null: int = 1000, seed: int = 0,
                   decoders: dict | None = None, min_overlap: float = MIN_OVERLAP
                   ) -> tuple[list[Region], dict[str, Path]]:
    """Merge the clusters of all metrics and signs into regions by voxel overlap
    (:func:`microvba.decode.regions.merge_clusters`) and decode each region once.

    A region's mask is the union of its clusters; its files carry the name of its first
    cluster (``<metric>_<pos|neg>_cluster-<id>_vocab-<v>_decoding.tsv``, bar and polar
    plots, ``..._mapdecoding.tsv`` from that cluster's statistic map inside the region),
    so the names are those :func:`decode_clusters` writes; the clusters merged into
    another's region get no files of their own. ``out_dir/regions.tsv`` lists every
    cluster with its region and the file stem it was decoded as, and each
    ``<metric>_<pos|neg>_decoding.json`` sidecar records the regions it holds.

    Returns
    -------
    regions, files
        The regions, and ``{"<stem>_<v>_tsv" ...: Path}`` of every file written (plus
        ``"regions"``).
    """
    _check_databases(vocabularies, data_dir)
    out_dir = Path(out_dir)
    regions = merge_clusters(list(clusters), min_overlap=min_overlap)
    by_prefix: dict[str, list[Region]] = {}
    for reg in regions:
        by_prefix.setdefault(reg.first.prefix, []).append(reg)
    files: dict[str, Path] = {}
    for prefix, regs in by_prefix.items():
        masks = {reg.first.cluster_id: (reg.mask, reg.first.affine, reg.first.stat_img)
                 for reg in regs}
        extra = {"Regions": {str(reg.first.cluster_id): {
            "region": reg.region_id, "metrics": reg.metrics, "voxels": int(reg.mask.sum()),
            "clusters": [D.cluster_stem(c.prefix, c.cluster_id) for c in reg.members],
            "min_overlap": min_overlap} for reg in regs}}
        out = _decode_masks(masks, out_dir, prefix, vocabularies, data_dir, cache_dir, n_null,
                            seed, decoders, None, extra=extra)
        for cid, paths in out.items():
            for k, v in paths.items():
                files[f"{D.cluster_stem(prefix, cid)}_{k}"] = v
    files["regions"] = write_regions(regions, out_dir)
    n_merged = sum(len(r.members) for r in regions)
    log.info("decoded %d distinct region(s) of %d cluster(s) (overlap coefficient >= %g)",
             len(regions), n_merged, min_overlap)
    return regions, files


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
