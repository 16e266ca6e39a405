"""Cluster tables: connected suprathreshold clusters, their peaks, sub-peaks and centres.

A cluster is a connected component (6-, 18- or 26-connectivity) of the voxels that are
significant, either ``corrp > 1 - alpha`` on a corrected map stored as ``1 - p`` (the
``randomise`` convention of the permutation stage) or ``stat > threshold`` on the statistic map
itself. For each cluster the table reports its size (voxels and mm^3), the peak statistic and
its MNI coordinate, the centre of mass, and local sub-peaks at least ``min_distance_mm`` apart.

Peaks follow nilearn's ``get_clusters_table`` (``nilearn.reporting``) so the two tables agree
on the same map, threshold and connectivity:

1. within the cluster (values outside set to 0), a voxel is a local maximum when it equals the
   maximum of its 3x3x3 neighbourhood and (unless the cluster is constant) that neighbourhood is
   not flat;
2. plateaus of equal maxima (6-connected) are replaced by their centre of mass, rounded to a
   voxel (the nearest cluster voxel if the centre falls outside the cluster);
3. maxima are sorted by decreasing value and greedily pared: a maximum closer than
   ``min_distance_mm`` to a kept, higher one is dropped.

Clusters are numbered by decreasing peak statistic (positive tail first when two-sided).
"""

from __future__ import annotations

from string import ascii_lowercase

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .._validation import InputError, check_choice, check_in_range
from ..io import derivatives

CONNECTIVITY = {6: 1, 18: 2, 26: 3}

CLUSTER_COLUMNS = list(derivatives.CLUSTER_COLUMNS)


def structure(connectivity: int) -> np.ndarray:
    """scipy.ndimage structuring element for 6-, 18- or 26-connectivity."""
    check_choice("connectivity", connectivity, list(CONNECTIVITY))
    return ndimage.generate_binary_structure(3, CONNECTIVITY[connectivity])


def _data3d(img: nib.spatialimages.SpatialImage, name: str) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"the {name} must be a 3-D image; got shape {data.shape}",
                         file=getattr(img, "get_filename", lambda: None)() or name,
                         fix=f"Pass one 3-D volume as {name}.")
    return np.where(np.isfinite(data), data, 0.0)


# --------------------------------------------------------------------------- peaks


def _local_maxima(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima (plateaus collapsed to their centre) of a cluster-masked, positive map."""
    nonzero = data != 0
    data_max = ndimage.maximum_filter(data, 3)
    maxima = (data == data_max) & nonzero
    inside = data[nonzero]
    if not np.isclose(inside.max(), inside.min()):
        flat = (data_max - ndimage.minimum_filter(data, 3)) <= 0
        maxima &= ~flat
    labeled, n = ndimage.label(maxima)
    index = np.arange(1, n + 1)
    ijk = np.rint(np.array(ndimage.center_of_mass(data, labeled, index))).astype(int)
    ijk = ijk.reshape(-1, 3)
    outside = labeled[ijk[:, 0], ijk[:, 1], ijk[:, 2]] != index
    if outside.any():  # centre of a ring-shaped plateau: nearest voxel of that plateau
        for row in np.flatnonzero(outside):
            pts = np.argwhere(labeled == index[row])
            ijk[row] = pts[np.argmin(np.linalg.norm(pts - ijk[row], axis=1))]
    return ijk, data[ijk[:, 0], ijk[:, 1], ijk[:, 2]]


def _pare(xyz: np.ndarray, min_distance_mm: float) -> np.ndarray:
    """Greedy selection of maxima (sorted by value) at least ``min_distance_mm`` apart."""
    keep = np.ones(len(xyz), dtype=bool)
    for i in range(len(xyz)):
        if keep[i]:
            later = np.arange(i + 1, len(xyz))
            d = np.linalg.norm(xyz[later] - xyz[i], axis=1)
            keep[later] = d > min_distance_mm
    return keep


def cluster_peaks(masked: np.ndarray, affine: np.ndarray, min_distance_mm: float = 8.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak and sub-peaks of one cluster.

    Parameters
    ----------
    masked
        3-D map, positive inside the cluster and 0 outside (flip the sign of a negative tail).
    affine
        Voxel-to-MNI affine.
    min_distance_mm
        Minimum distance between reported peaks.

    Returns
    -------
    ijk, xyz, values
        Peaks sorted by decreasing value (the first is the cluster peak).
    """
    ijk, vals = _local_maxima(masked)
    order = np.argsort(-vals, kind="stable")
    ijk, vals = ijk[order], vals[order]
    xyz = nib.affines.apply_affine(affine, ijk)
    keep = _pare(xyz, min_distance_mm)
    return ijk[keep], xyz[keep], vals[keep]


# --------------------------------------------------------------------------- table


def _significant(stat: np.ndarray, corrp_img, alpha: float, threshold: float | None,
                 two_sided: bool) -> list[tuple[int, np.ndarray]]:
    """(tail, boolean mask) pairs of significant voxels."""
    if corrp_img is not None:
        corrp = _data3d(corrp_img, "corrected p map (1 - p)")
        if corrp.shape != stat.shape:
            raise InputError(f"the corrected map's shape {corrp.shape} differs from the "
                             f"statistic map's {stat.shape}", file="corrp_img",
                             fix="Pass the corrp map of the same contrast as stat_img.")
        sig = corrp > 1.0 - alpha
        if two_sided:
            return [(1, sig & (stat > 0)), (-1, sig & (stat < 0))]
        # one map, one contrast: the tail of each cluster is the sign of its statistic
        return [(0, sig)]
    if threshold is None:
        raise InputError("neither a corrected map nor a threshold was given",
                         file="cluster_table",
                         fix="Pass corrp_img=<1-p map> (with alpha) or threshold=<stat value>.")
    if two_sided:
        return [(1, stat > abs(threshold)), (-1, stat < -abs(threshold))]
    if threshold < 0:
        return [(-1, stat < threshold)]
    return [(1, stat > threshold)]


def cluster_table(stat_img: nib.spatialimages.SpatialImage,
                  mask_img: nib.spatialimages.SpatialImage | None = None,
                  *, threshold: float | None = None,
                  corrp_img: nib.spatialimages.SpatialImage | None = None,
                  alpha: float = 0.05, connectivity: int = 26, min_distance_mm: float = 8.0,
                  two_sided: bool = False, min_voxels: int = 1, max_subpeaks: int = 3,
                  ) -> tuple[pd.DataFrame, nib.Nifti1Image]:
    """Clusters of a statistic map with sizes, peaks, sub-peaks and centres of mass.

    Parameters
    ----------
    stat_img
        3-D statistic map (t, z, TFCE...), larger = more significant in the positive tail.
    mask_img
        Optional analysis mask; voxels outside are never significant.
    threshold
        Cluster-forming threshold on ``stat_img`` (used when ``corrp_img`` is None).
    corrp_img
        Corrected ``1 - p`` map (randomise convention); voxels with ``corrp > 1 - alpha`` are
        significant. Takes precedence over ``threshold``.
    alpha
        FWE level for ``corrp_img``.
    connectivity
        6, 18 or 26 (randomise and FSL ``cluster`` use 26; nilearn uses 6).
    min_distance_mm
        Minimum distance between reported peaks of a cluster.
    two_sided
        Also report clusters of the negative tail (``stat < -threshold``).
    min_voxels
        Drop clusters smaller than this.
    max_subpeaks
        Sub-peaks reported per cluster besides the main peak (nilearn reports 3).

    Returns
    -------
    table : pandas.DataFrame
        One row per cluster, columns :data:`CLUSTER_COLUMNS`: ``cluster_id`` (1, 2, ... by
        decreasing peak statistic), ``tail`` (+1/-1), ``n_voxels``, ``volume_mm3``,
        ``peak_stat`` (signed), ``peak_x/y/z`` (MNI mm), ``com_x/y/z`` (centre of mass, mm),
        ``n_subpeaks`` and ``subpeaks`` (``"x,y,z:stat"`` joined by ``"; "``).
    label_img : nibabel.Nifti1Image
        int32 image, voxels of cluster ``k`` hold ``k``.
    """
    alpha = check_in_range("alpha", alpha, 0.0, 1.0)
    if min_distance_mm <= 0:
        raise InputError(f"min_distance_mm must be positive. Got {min_distance_mm!r} instead.",
                         file="parameter min_distance_mm", fix="Pass a distance in mm, e.g. 8.")
    struct = structure(connectivity)
    stat = _data3d(stat_img, "statistic map")
    if mask_img is not None:
        mask = _data3d(mask_img, "mask") > 0
        if mask.shape != stat.shape:
            raise InputError(f"the mask's shape {mask.shape} differs from the statistic map's "
                             f"{stat.shape}", file="mask_img",
                             fix="Pass a mask on the statistic map's grid.")
    else:
        mask = np.ones(stat.shape, dtype=bool)
    affine = stat_img.affine
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    found = []  # (tail, peak, voxel indices, peaks)
    for tail, sig in _significant(stat, corrp_img, alpha, threshold, two_sided):
        labeled, n = ndimage.label(sig & mask, structure=struct)
        tail_rows = []
        for lab, sl in enumerate(ndimage.find_objects(labeled), start=1):
            if sl is None:
                continue
            # crop one voxel beyond the cluster (not beyond the image, where the filters
            # reflect): the same maxima as on the full grid, at a fraction of the cost
            sl = tuple(slice(max(0, s.start - 1), min(n_, s.stop + 1))
                       for s, n_ in zip(sl, stat.shape, strict=True))
            sub = labeled[sl] == lab
            if sub.sum() < min_voxels:
                continue
            values = stat[sl][sub]
            t = tail if tail != 0 else (1 if values.sum() >= 0 else -1)
            masked = np.zeros(sub.shape)
            masked[sub] = np.maximum(t * values, 0.0)  # opposite-sign voxels are never peaks
            if not (masked > 0).any():
                continue
            start = np.array([s.start for s in sl])
            shifted = affine @ nib.affines.from_matvec(np.eye(3), start)
            _, xyz, vals = cluster_peaks(masked, shifted, min_distance_mm)
            vox = np.argwhere(sub) + start
            tail_rows.append((t, float(vals[0] * t), vox, xyz, vals * t))
        tail_rows.sort(key=lambda r: -abs(r[1]))
        found += tail_rows
    label_data = np.zeros(stat.shape, dtype=np.int32)
    rows = []
    for cid, (t, peak, vox, xyz, vals) in enumerate(found, start=1):
        label_data[tuple(vox.T)] = cid
        com = nib.affines.apply_affine(affine, vox.mean(axis=0))
        subs = [f"{x:g},{y:g},{z:g}:{v:.6g}" for (x, y, z), v in
                zip(xyz[1:1 + max_subpeaks], vals[1:1 + max_subpeaks], strict=True)]
        rows.append([cid, t, len(vox), len(vox) * voxel_mm3, peak, *xyz[0], *com, len(subs),
                     "; ".join(subs)])
    table = pd.DataFrame(rows, columns=CLUSTER_COLUMNS)
    return table, nib.Nifti1Image(label_data, affine)


def peak_table(table: pd.DataFrame) -> pd.DataFrame:
    """Peaks and sub-peaks, one row each, as nilearn's ``get_clusters_table`` lays them out.

    Columns ``Cluster ID`` (``1``, ``1a``, ``1b``...), ``X``, ``Y``, ``Z``, ``Peak Stat`` and
    ``Cluster Size (mm3)`` (main peaks only).
    """
    rows = []
    for _, c in table.iterrows():
        cid = c[derivatives.CLUSTER_ID]
        # CLUSTER_COLUMNS: cluster_id, tail, n_voxels, volume_mm3, peak_stat, peak_x/y/z
        rows.append([str(cid), *(c[k] for k in derivatives.PEAK_XYZ),
                     c[CLUSTER_COLUMNS[4]], c[CLUSTER_COLUMNS[3]]])
        subs = [s for s in str(c["subpeaks"]).split("; ") if s and s != "nan"]
        for k, s in enumerate(subs):
            coords, value = s.split(":")
            x, y, z = (float(v) for v in coords.split(","))
            rows.append([f"{cid}{ascii_lowercase[k]}", x, y, z, float(value),
                         np.nan])
    return pd.DataFrame(rows, columns=["Cluster ID", "X", "Y", "Z", "Peak Stat",
                                       "Cluster Size (mm3)"])
