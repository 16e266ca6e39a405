"""A synthetic derivatives folder with the layout the group stage writes (coarse grid)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

METRICS = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")
SPACE = "MNI152NLin2009cSym"
#: (metric, sign, MNI peak, Brainnetome label, planted r)
PLANTED = [
    ("ad", "+", (-4, -10, 38), "CG_L_7_5 (A23c)", 0.48),
    ("ad", "+", (14, 12, 12), "BG_R_6_5 (dCa)", 0.45),
    ("fa", "+", (42, 10, 32), "MFG_R_7_4 (IFJ)", 0.33),
    ("icvf", "+", (-20, -66, 58), "SPL_L_5_1 (A7r)", 0.27),
    ("odi", "-", (30, 40, 36), "MFG_R_7_5 (A9/46d)", -0.27),
]
VOXEL_MM = 8.0


def grid_affine(voxel_mm: float = VOXEL_MM) -> np.ndarray:
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = (-90.0, -126.0, -72.0)
    return aff


def _png(path: Path, seed: int, *, outlier: bool = False, size=(5.0, 2.0)) -> None:
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=size)
    axes = fig.subplots(1, 3)
    for ax in axes:
        img = rng.normal(size=(24, 24)).cumsum(0)
        ax.imshow(img[::-1] if outlier else img, cmap="gray")
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)


def make_output_folder(out: Path, *, n_subjects: int = 12, metrics=METRICS,
                       seed: int = 0, with_planted: bool = True,
                       n_mosaics: int | None = None, layout: str = "group") -> Path:
    """Write a derivatives folder; return ``out``.

    ``layout="group"`` writes the column names of microvba's group and regions stages
    (``n_voxels``, ``volume_mm3``, ``brainnetome_top``, ``q_fdr``, cluster label images, no
    FWE p column, flat ``tfce_H`` settings); ``layout="brief"`` the alternative spellings
    (``size_vox``, ``brainnetome``, ``min_fwe_p``, ``q``, nested ``tfce``) the report accepts.
    """
    group_layout = layout == "group"
    rng = np.random.default_rng(seed)
    group = out / "group"
    group.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "microvba demo <synthetic>", "BIDSVersion": "1.9.0",
         "DatasetType": "derivative"}))
    subjects = [f"sub-{i:02d}" for i in range(1, n_subjects + 1)]
    age = rng.normal(35, 10, n_subjects).round(1)
    score = (60 + 0.3 * (age - 35) + rng.normal(0, 12, n_subjects)).clip(0, 100).round(0)
    pd.DataFrame({"participant_id": subjects, "resilience": score, "age": age,
                  "sex": rng.choice(["F", "M"], n_subjects),
                  "education": rng.integers(9, 20, n_subjects),
                  "depression": rng.normal(20, 6, n_subjects).round(0)}).to_csv(
        group / "participants.tsv", sep="\t", index=False)
    corr = rng.uniform(0.85, 0.95, n_subjects)
    dice = rng.uniform(0.8, 0.9, n_subjects)
    outlier = np.zeros(n_subjects, dtype=bool)
    outlier[-1] = True
    corr[-1], dice[-1] = 0.41, 0.37
    qc_names = ("correlation", "dice_gm") if group_layout else ("corr", "dice")
    pd.DataFrame({"participant_id": subjects, qc_names[0]: corr, qc_names[1]: dice,
                  "outlier": outlier}).to_csv(group / "qc.tsv", sep="\t", index=False)
    for i, sub in enumerate(subjects[: n_mosaics or n_subjects]):
        _png(out / sub / "figures" / f"{sub}_space-{SPACE}_desc-regqc_dwimap.png", i,
             outlier=bool(outlier[i]))
    analysis = {
        "score": "resilience", "covariates": ["age", "sex", "education", "depression"],
        "metrics": list(metrics), "n_perm": 500, "seed": 42, "fwhm": 6.0, "alpha": 0.05,
        "correction": "tfce", "tfce": {"H": 2.0, "E": 0.5, "connectivity": 6},
        "permutation_method": "freedman_lane", "space": SPACE, "resolution": VOXEL_MM,
        "gm_threshold": 0.3, "n_subjects": n_subjects,
        "correlation": {"method": "pearson", "n_boot": 2000},
        "decoding": {"vocabularies": ["lda50", "terms"], "kernel_radius": 6},
        "software_versions": {"microvba": "0.1.0", "numpy": np.__version__,
                              "antspyx": "0.5.4", "dipy": "1.12.0"},
    }
    if group_layout:  # as workflows.group writes it: asdict(GroupSettings) + extras
        analysis = {
            "score": "resilience", "covariates": ["age", "sex", "education", "depression"],
            "metrics": list(metrics), "n_perm": 500, "seed": 42, "fwhm": 6.0,
            "gm_threshold": 0.3, "isovf_max": None, "resolution": VOXEL_MM, "alpha": 0.05,
            "tfce_H": 2.0, "tfce_E": 0.5, "tfce_connectivity": 6, "cluster_threshold": 3.1,
            "correct_across": False, "exclude_outliers": True, "decode": True,
            "vocabularies": ["lda50", "terms"], "data_dir": None, "extra": {},
            "subjects": subjects[:-1], "excluded_outliers": [subjects[-1]], "space": SPACE,
            "design_columns": ["intercept", "resilience", "age"],
            "SoftwareVersions": analysis["software_versions"],
            "summary": {"n_subjects": n_subjects, "n_voxels": 4321, "metrics": {}},
        }
    (group / "analysis.json").write_text(json.dumps(analysis, indent=2))
    aff = grid_affine()
    shape = (23, 28, 23)
    inv = np.linalg.inv(aff)
    gm = np.zeros(shape, dtype=np.uint8)
    gm[3:20, 3:25, 3:20] = 1
    nib.save(nib.Nifti1Image(gm, aff), group / f"space-{SPACE}_desc-gm_mask.nii.gz")
    cluster_rows, corr_rows = [], []
    for metric in metrics:
        mdir = group / metric
        mdir.mkdir(exist_ok=True)
        t = rng.normal(0, 1, shape).astype(np.float32) * gm
        corrp = rng.uniform(0, 0.6, shape).astype(np.float32) * gm
        corrp2 = rng.uniform(0, 0.6, shape).astype(np.float32) * gm
        cid = {"+": 0, "-": 0}
        labels = {"+": np.zeros(shape, np.int32), "-": np.zeros(shape, np.int32)}
        for m, sign, xyz, label, r in PLANTED:
            if m != metric:
                continue
            i, j, k = np.round(nib.affines.apply_affine(inv, xyz)).astype(int)
            sl = (slice(i - 1, i + 2), slice(j - 1, j + 2), slice(k - 1, k + 1))
            blob = 3.5 + 2.0 * rng.uniform(size=t[sl].shape)
            t[sl] = blob if sign == "+" else -blob
            (corrp if sign == "+" else corrp2)[sl] = 0.99
            cid[sign] += 1
            labels[sign][sl] = cid[sign]
            peak = float(np.abs(t[sl]).max()) * (1 if sign == "+" else -1)
            if group_layout:
                cluster_rows.append({
                    "cluster_id": cid[sign], "region": label, "tail": 1 if sign == "+" else -1,
                    "n_voxels": 18, "volume_mm3": 18 * VOXEL_MM ** 3, "peak_stat": peak,
                    "peak_x": xyz[0], "peak_y": xyz[1], "peak_z": xyz[2], "com_x": xyz[0],
                    "com_y": xyz[1], "com_z": xyz[2], "n_subpeaks": 0, "subpeaks": "",
                    "brainnetome": f"{label} (83.3%); no <label> (16.7%)",
                    "brainnetome_top": label, "harvard_oxford": "Cingulate <Gyrus> (60.0%)",
                    "harvard_oxford_top": "Cingulate <Gyrus>", "aal": "Cingulum_Mid_L (55%)",
                    "aal_top": "Cingulum_Mid_L", "peak_brainnetome": label,
                    "peak_harvard_oxford": "Cingulate <Gyrus>", "peak_aal": "Cingulum_Mid_L",
                    "metric": metric, "sign": sign})
            else:
                cluster_rows.append({
                    "metric": metric, "sign": sign, "cluster_id": cid[sign], "size_vox": 18,
                    "size_mm3": 18 * VOXEL_MM ** 3, "peak_x": xyz[0], "peak_y": xyz[1],
                    "peak_z": xyz[2], "peak_stat": peak, "cog_x": xyz[0], "cog_y": xyz[1],
                    "cog_z": xyz[2], "brainnetome": label,
                    "harvard_oxford": "Cingulate <Gyrus>", "aal": "Cingulum_Mid_L",
                    "min_fwe_p": 0.01})
            n = n_subjects
            for method in ("pearson", "spearman") if group_layout else ("pearson",):
                row = {"metric": metric, "sign": sign, "cluster_id": cid[sign],
                       "method": method, "r": r * 1.3, "ci_low": r * 1.3 - 0.2,
                       "ci_high": r * 1.3 + 0.2, "p": 0.004, "q": 0.01, "boot_ci_low": r - 0.25,
                       "boot_ci_high": r + 0.25, "loso_r": r, "loso_ci_low": r - 0.25,
                       "loso_ci_high": r + 0.25, "n": n}
                if group_layout:
                    row["q_fdr"] = row.pop("q")
                    row.update(k=4, loso_p=0.03, loso_mean_dice=0.9,
                               in_sample_r="descriptive: cluster selected on the same data")
                corr_rows.append(row)
            _png(mdir / f"{metric}_{'pos' if sign == '+' else 'neg'}_cluster-{cid[sign]}"
                        "_scatter.png", cid[sign], size=(3, 3))
            for vocab in ("lda50", "terms"):
                stem = (f"{metric}_{'pos' if sign == '+' else 'neg'}_cluster-{cid[sign]}"
                        f"_vocab-{vocab}_decoding")
                dec = group / "decoding"
                dec.mkdir(exist_ok=True)
                table = pd.DataFrame({"feature": [f"{vocab}_{q}" for q in range(12)],
                                      "label": [f"emotion <{q}> & memory" for q in range(12)],
                                      "statistic": np.linspace(4, -1, 12),
                                      "p": np.linspace(1e-4, 0.9, 12),
                                      "q": np.linspace(1e-3, 0.99, 12)})
                if group_layout:  # decode stage: log_odds, z, significant
                    table = table.rename(columns={"statistic": "log_odds"}).assign(
                        z=table["statistic"] * 2, significant=table["q"] < 0.05)
                table.to_csv(dec / f"{stem}.tsv", sep="\t", index=False)
                # decode stage: <stem>_bar.png beside <stem>_decoding.tsv
                png_stem = stem[: -len("_decoding")] if group_layout else stem
                if vocab == "lda50":  # the other vocabulary has no PNG: the report draws it
                    _png(dec / f"{png_stem}_bar.png", 7, size=(3, 3))
                    _png(dec / f"{png_stem}_polar.png", 8, size=(3, 3))
        nib.save(nib.Nifti1Image(t, aff), mdir / f"{metric}_tstat1.nii.gz")
        nib.save(nib.Nifti1Image(-t, aff), mdir / f"{metric}_tstat2.nii.gz")
        nib.save(nib.Nifti1Image(corrp, aff), mdir / f"{metric}_tfce_corrp_tstat1.nii.gz")
        nib.save(nib.Nifti1Image(corrp2, aff), mdir / f"{metric}_tfce_corrp_tstat2.nii.gz")
        nib.save(nib.Nifti1Image(corrp, aff), mdir / f"{metric}_vox_corrp_tstat1.nii.gz")
        nib.save(nib.Nifti1Image(t, aff), mdir / f"{metric}_tfce_tstat1.nii.gz")
        for sign, tag in (("+", "pos"), ("-", "neg")):
            if group_layout and labels[sign].any():
                nib.save(nib.Nifti1Image(labels[sign], aff), mdir / f"{metric}_{tag}_clusters.nii.gz")
        (mdir / f"{metric}_randomise.json").write_text(json.dumps(
            {"Parameters": {"n_perm": 500, "tfce_H": 2.0}, "SoftwareVersions": {"numba": "0.60"}}))
    pd.DataFrame(cluster_rows).to_csv(group / "clusters.tsv", sep="\t", index=False)
    pd.DataFrame(corr_rows).to_csv(group / "correlations.tsv", sep="\t", index=False)
    if with_planted:
        rows = [{"region": label, "metric": m, "sign": s, "planted_r": r,
                 "found": m in metrics and k != 4, "found_r": r + 0.05 if k != 4 else None,
                 "peak_distance_mm": 3.5 if k != 4 else None,
                 "fwe_p": 0.01 if k != 4 else None}
                for k, (m, s, _, label, r) in enumerate(PLANTED)]
        if group_layout:  # workflows.planted: hemisphere, loso_r, a "(not planted)" row
            for row, (_, _, xyz, _, _) in zip(rows, PLANTED, strict=True):
                row.update(hemisphere="L" if xyz[0] < 0 else "R", loso_r=row["found_r"])
                del row["fwe_p"]
            rows.append({"region": "(not planted)", "metric": "md", "sign": "+",
                         "planted_r": 0.0, "found": False, "cluster_id": 1})
        pd.DataFrame(rows).to_csv(group / "planted_vs_found.tsv", sep="\t", index=False)
    return out
