"""Decoding benchmark: microvba vs NiMARE on Neurosynth v7 LDA-50 topics, one run.

    .venv/bin/python benchmarks/bench_decode.py [--quick] [--write-reference]

1. microvba (in a child process, for a clean peak-memory figure): build the 50 LDA topic
   maps from scratch (incidence matrix included), decode ROIs and maps against the cached
   maps, and (unless --quick) build the NeuroQuery term maps.
2. NiMARE in this process: Studyset conversion, CorrelationDecoder(MKDAChi2) fit, map decoding,
   ROIAssociationDecoder per ROI, on the same kernel (6 mm) and threshold (0.05).
3. Agreement: correlation of every topic's association map with NiMARE's, Spearman over
   topics of the ROI and map rankings. ``--write-reference`` stores NiMARE's rankings in
   ``tests/decode/data/nimare_reference.json`` for the default tests.

--quick skips the NiMARE CorrelationDecoder fit and the term maps (ROI decoder on one ROI).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROVBA_DATA", ROOT.parent / "shared" / "data"))
ATLAS = DATA / "atlases" / "brainnetome" / "BN_Atlas_246_1mm_spmgrid.nii.gz"
REFERENCE = ROOT / "tests" / "decode" / "data" / "nimare_reference.json"
KERNEL_MM = 6.0
THRESHOLD = 0.05
FWHM = 8.0
#: Brainnetome labels: the study's regions (bilateral A23c, right dCa, right IFJ) + sanity
ROIS = {"A23c": [185, 186], "dCa_R": [228], "IFJ_R": [18], "amygdala": [211, 212, 213, 214],
        "A4ul": [57, 58]}
ROI_ASSOC = ["A23c", "dCa_R", "IFJ_R"]


def roi_images():
    """ROI masks and smoothed-ROI 'statistic maps' (FWHM 8 mm) on the atlas's 1 mm grid."""
    import nibabel as nib
    from nilearn.image import smooth_img

    from microvba.decode.grid import atlas_roi

    rois = {k: atlas_roi(ATLAS, v) for k, v in ROIS.items()}
    maps = {k: smooth_img(nib.Nifti1Image(np.asarray(v.dataobj, np.float32), v.affine), FWHM)
            for k, v in rois.items()}
    return rois, maps


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def microvba_run(quick: bool, queue) -> None:
    """Child process: timings, memory and tables of microvba."""
    from microvba.decode import Decoder, feature_maps, load_database

    out: dict = {}
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as cold:
        t0 = time.perf_counter()
        db = load_database("neurosynth", DATA)
        out["load_s"] = time.perf_counter() - t0
        feature_maps(db, "lda50", KERNEL_MM, THRESHOLD, cache_dir=warm)  # JIT + mask load
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        fm = feature_maps(db, "lda50", KERNEL_MM, THRESHOLD, cache_dir=cold)
        out["lda_build_s"] = time.perf_counter() - t0
        out["lda_build_total_s"] = out["lda_build_s"] + out["load_s"]
        out["peak_rss_mb"] = _rss_mb()
        out["rss_before_mb"] = rss0
        out["n_maps"] = len(fm.features)
        out["n_dropped"] = len(fm.dropped)
        out["features"] = fm.features
        out["z_association"] = np.asarray(fm.z_association)
        out["mask_ijk"] = np.argwhere(fm.grid.mask)
        out["affine"] = fm.grid.affine
        t0 = time.perf_counter()
        dec = Decoder("lda50", DATA, KERNEL_MM, THRESHOLD, n_null=1000, cache_dir=cold).fit()
        out["fit_cached_s"] = time.perf_counter() - t0
        rois, maps = roi_images()
        out["roi"], out["roi_s"], out["roi_nonull_s"], out["map"], out["map_s"] = {}, {}, {}, \
            {}, {}
        dec0 = Decoder("lda50", DATA, KERNEL_MM, THRESHOLD, n_null=0, cache_dir=cold).fit()
        for name, img in rois.items():
            t0 = time.perf_counter()
            out["roi"][name] = dec.decode_roi(img)
            out["roi_s"][name] = time.perf_counter() - t0
            t0 = time.perf_counter()
            dec0.decode_roi(img)
            out["roi_nonull_s"][name] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out["map"][name] = dec.decode_map(maps[name])
            out["map_s"][name] = time.perf_counter() - t0
        if not quick:
            t0 = time.perf_counter()
            nq = load_database("neuroquery", DATA)
            fmt = feature_maps(nq, "terms", KERNEL_MM, cache_dir=cold)
            out["terms_build_s"] = time.perf_counter() - t0
            out["terms_n_maps"] = len(fmt.features)
            out["terms_peak_rss_mb"] = _rss_mb()
    queue.put(out)


def nimare_run(quick: bool) -> dict:
    """This process: NiMARE's decoders on the same data and parameters."""
    sys.path.insert(0, str(Path(__file__).parent))
    import _nimare_decode as nd

    rois, maps = roi_images()
    out: dict = {}
    t0 = time.perf_counter()
    studyset = nd.load_studyset(DATA / "neurosynth")
    out["studyset_s"] = time.perf_counter() - t0
    out["rss_after_studyset_mb"] = _rss_mb()
    if not quick:
        dec, out["fit_s"] = nd.run_correlation_decoder(studyset, KERNEL_MM, THRESHOLD)
        out["peak_rss_mb"] = _rss_mb()
        out["map"] = nd.decode_maps(dec, maps)
        out["features"], out["z"], mask_img = nd.feature_maps(dec)
        out["mask_ijk"] = np.argwhere(np.asarray(mask_img.dataobj) > 0)
        out["affine"] = mask_img.affine
        del dec
    which = ROI_ASSOC if not quick else ["dCa_R"]
    out["roi"], out["roi_s"] = nd.run_roi_association(studyset, {k: rois[k] for k in which},
                                                      KERNEL_MM)
    return out


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b, nan_policy="omit")[0])


def compare(mv: dict, nm: dict) -> dict:
    """Agreement figures between the two runs."""
    import nibabel as nib

    res: dict = {"roi_r": {}, "roi_logodds_vs_r": {}, "map_r": {}}
    for name, s in nm["roi"].items():
        t = mv["roi"][name].set_index("feature")
        res["roi_r"][name] = _spearman(t["r"], s.reindex(t.index))
        res["roi_logodds_vs_r"][name] = _spearman(t["log_odds"], s.reindex(t.index))
    for name, s in nm.get("map", {}).items():
        t = mv["map"][name].set_index("feature")
        res["map_r"][name] = _spearman(t["r"], s.reindex(t.index))
    if "z" in nm:
        # voxel-wise agreement of the maps on the voxels both masks share
        xyz = nib.affines.apply_affine(nm["affine"], nm["mask_ijk"])
        ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(mv["affine"]), xyz)).astype(int)
        ours = {tuple(v): i for i, v in enumerate(mv["mask_ijk"])}
        pairs = [(j, ours[tuple(v)]) for j, v in enumerate(ijk) if tuple(v) in ours]
        jn, jm = (np.asarray(p) for p in zip(*pairs, strict=True))
        rs, diffs = [], []
        for i, f in enumerate(mv["features"]):
            k = nm["features"].index(f)
            a, b = mv["z_association"][i][jm], nm["z"][k][jn]
            rs.append(float(np.corrcoef(a, b)[0, 1]))
            diffs.append(float(np.abs(a - b).max()))
        res["map_voxel_r_min"] = min(rs)
        res["map_voxel_absdiff_max"] = max(diffs)
        res["shared_voxels"] = len(jn)
    return res


def write_reference(nm: dict, path: Path = REFERENCE) -> None:
    import nimare

    from microvba._provenance import write_json

    ref = {
        "about": "NiMARE reference rankings for tests/decode (written by "
                 "benchmarks/bench_decode.py --write-reference)",
        "nimare_version": nimare.__version__, "kernel_mm": KERNEL_MM, "threshold": THRESHOLD,
        "map_fwhm_mm": FWHM, "atlas": "atlases/brainnetome/BN_Atlas_246_1mm_spmgrid.nii.gz",
        "rois": ROIS,
        "roi_association_r": {k: {f: round(float(v), 8) for f, v in s.items()}
                              for k, s in nm["roi"].items()},
        "map_correlation_r": {k: {f: round(float(v), 8) for f, v in s.items()}
                              for k, s in nm.get("map", {}).items()},
    }
    write_json(path, ref)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write-reference", action="store_true")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=microvba_run, args=(args.quick, queue))
    child.start()
    mv = queue.get()
    child.join()
    print("== microvba")
    for k in ("load_s", "lda_build_s", "lda_build_total_s", "peak_rss_mb", "n_maps",
              "n_dropped", "fit_cached_s", "terms_build_s", "terms_n_maps",
              "terms_peak_rss_mb"):
        if k in mv:
            print(f"  {k}: {mv[k]:.2f}" if isinstance(mv[k], float) else f"  {k}: {mv[k]}")
    print("  decode_roi s (n_null=1000):", {k: round(v, 3) for k, v in mv["roi_s"].items()})
    print("  decode_roi s (no null):", {k: round(v, 3) for k, v in mv["roi_nonull_s"].items()})
    print("  decode_map s (n_null=1000):", {k: round(v, 3) for k, v in mv["map_s"].items()})
    for name in ("amygdala", "A4ul"):
        print(f"  top 3 {name}:", list(mv["roi"][name]["feature"][:3]))
    nm = nimare_run(args.quick)
    print("== NiMARE")
    for k in ("studyset_s", "rss_after_studyset_mb", "fit_s", "peak_rss_mb"):
        if k in nm:
            print(f"  {k}: {nm[k]:.2f}")
    print("  ROIAssociationDecoder s:", {k: round(v, 2) for k, v in nm["roi_s"].items()})
    res = compare(mv, nm)
    print("== agreement (Spearman over topics)")
    print(json.dumps(res, indent=1))
    if "fit_s" in nm:
        print(f"== speed-up, LDA-50 maps from scratch: NiMARE fit {nm['fit_s']:.1f} s vs "
              f"microvba {mv['lda_build_s']:.2f} s -> {nm['fit_s'] / mv['lda_build_s']:.0f}x "
              f"(with database loading {mv['lda_build_total_s']:.2f} s -> "
              f"{nm['fit_s'] / mv['lda_build_total_s']:.0f}x; NiMARE Studyset conversion "
              f"{nm['studyset_s']:.0f} s not counted)")
    nm_roi = np.mean(list(nm["roi_s"].values()))
    mv_roi = np.mean([mv["roi_s"][k] for k in nm["roi_s"]])
    print(f"== ROI decoding: NiMARE {nm_roi:.1f} s vs microvba {mv_roi:.2f} s per ROI "
          f"(with a 1000-ROI spatial null) -> {nm_roi / mv_roi:.0f}x")
    if args.write_reference:
        if args.quick:
            print("--write-reference needs a full run (no --quick)")
            return 1
        write_reference(nm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
