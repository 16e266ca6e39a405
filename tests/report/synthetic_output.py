"""A synthetic derivatives folder with the layout the group stage writes (coarse grid).

Every name, column and ``analysis.json`` key comes from the output contract
(:mod:`microvba.io.derivatives`), the module the pipeline writes through, so this fixture
cannot drift from what the pipeline writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from microvba.io import derivatives as D

METRICS = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")
SPACE = D.SPACE_MNI
#: (metric, sign, MNI peak, Brainnetome label, planted r)
PLANTED = [
    ("ad", "+", (-4, -10, 38), "CG_L_7_5 (A23c)", 0.48),
    ("ad", "+", (14, 12, 12), "BG_R_6_5 (dCa)", 0.45),
    ("fa", "+", (42, 10, 32), "MFG_R_7_4 (IFJ)", 0.33),
    ("icvf", "+", (-20, -66, 58), "SPL_L_5_1 (A7r)", 0.27),
    ("odi", "-", (30, 40, 36), "MFG_R_7_5 (A9/46d)", -0.27),
]
VOXEL_MM = 8.0
#: the atlases of the group stage's cluster table (regions.atlases.ATLASES)
ATLASES = ("brainnetome", "harvard_oxford", "aal")


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


def _cluster_row(metric: str, sign: str, cid: int, xyz, label: str, peak: float,
                 atlases=ATLASES) -> dict:
    """One row of clusters.tsv in the follow-up's column order."""
    other = {"harvard_oxford": "Cingulate <Gyrus>", "aal": "Cingulum_Mid_L"}
    tops = {a: (label if i == 0 else other.get(a, f"{a} label")) for i, a in enumerate(atlases)}
    values = {"cluster_id": cid, "metric": metric, "sign": sign, "tail": 1 if sign == "+" else -1,
              "n_voxels": 18, "volume_mm3": 18 * VOXEL_MM ** 3, "peak_stat": peak,
              "peak_x": xyz[0], "peak_y": xyz[1], "peak_z": xyz[2], "com_x": xyz[0],
              "com_y": xyz[1], "com_z": xyz[2], "n_subpeaks": 0, "subpeaks": ""}
    row = {c: values[c] for c in D.GROUP_CLUSTER_COLUMNS}
    row = {**{c: row.pop(c) for c in D.GROUP_CLUSTER_COLUMNS[:3]}, D.REGION: tops[atlases[0]],
           **row}
    for a in atlases:
        cover, top, _ = D.atlas_columns(a)
        row[cover] = f"{tops[a]} (83.3%); no <label> (16.7%)"
        row[top] = tops[a]
    for a in atlases:
        row[D.atlas_columns(a)[2]] = tops[a]
    return row


def make_output_folder(out: Path, *, n_subjects: int = 12, metrics=METRICS,
                       seed: int = 0, with_planted: bool = True,
                       n_mosaics: int | None = None, atlases=ATLASES) -> Path:
    """Write a derivatives folder as the group stage lays it out; return ``out``."""
    rng = np.random.default_rng(seed)
    group = D.group_dir(out)
    group.mkdir(parents=True, exist_ok=True)
    (out / D.DATASET_DESCRIPTION_JSON).write_text(json.dumps(
        {"Name": "microvba demo <synthetic>", "BIDSVersion": "1.9.0",
         "DatasetType": "derivative"}))
    subjects = [f"sub-{i:02d}" for i in range(1, n_subjects + 1)]
    age = rng.normal(35, 10, n_subjects).round(1)
    score = (60 + 0.3 * (age - 35) + rng.normal(0, 12, n_subjects)).clip(0, 100).round(0)
    pd.DataFrame({D.PARTICIPANT_ID: subjects, "resilience": score, "age": age,
                  "sex": rng.choice(["F", "M"], n_subjects),
                  "education": rng.integers(9, 20, n_subjects),
                  "depression": rng.normal(20, 6, n_subjects).round(0)}).to_csv(
        group / D.GROUP_PARTICIPANTS_TSV, sep="\t", index=False)
    corr = rng.uniform(0.85, 0.95, n_subjects)
    dice = rng.uniform(0.8, 0.9, n_subjects)
    dice_brain = rng.uniform(0.9, 0.95, n_subjects)
    outlier = np.zeros(n_subjects, dtype=bool)
    outlier[-1] = True
    corr[-1], dice[-1] = 0.41, 0.37
    pd.DataFrame(dict(zip(D.QC_COLUMNS, (subjects, corr, dice_brain, dice, outlier),
                          strict=True))).to_csv(group / D.QC_TSV, sep="\t", index=False)
    for i, sub in enumerate(subjects[: n_mosaics or n_subjects]):
        _png(D.qc_mosaic_path(out, sub, SPACE), i, outlier=bool(outlier[i]))
    # as workflows.group writes it: asdict(GroupSettings) + the contract's extra keys
    settings = {
        "score": "resilience", "covariates": ["age", "sex", "education", "depression"],
        "metrics": list(metrics), "n_perm": 500, "seed": 42, "fwhm": 6.0,
        "gm_threshold": 0.3, "isovf_max": None, "resolution": VOXEL_MM, "alpha": 0.05,
        "tfce_H": 2.0, "tfce_E": 0.5, "tfce_connectivity": 6, "cluster_threshold": 3.1,
        "correct_across": "none", "npc": [], "exclude_outliers": True, "decode": True,
        "vocabularies": list(D.VOCABULARIES), "data_dir": None, "extra": {}}
    analysis = D.analysis_record(
        settings, family_method="minp-tail", family_statistics=["tfce"], subjects=subjects[:-1],
        excluded_outliers=[subjects[-1]], space=SPACE,
        design_columns=["intercept", "resilience", "age"],
        software_versions={"microvba": "0.1.0", "numpy": np.__version__, "antspyx": "0.5.4",
                           "dipy": "1.12.0"},
        summary=D.analysis_summary(n_subjects=n_subjects, n_voxels=4321, metrics={},
                                   family="none", n_clusters=len(PLANTED)))
    (group / D.ANALYSIS_JSON).write_text(json.dumps(analysis, indent=2))
    aff = grid_affine()
    shape = (23, 28, 23)
    inv = np.linalg.inv(aff)
    gm = np.zeros(shape, dtype=np.uint8)
    gm[3:20, 3:25, 3:20] = 1
    nib.save(nib.Nifti1Image(gm, aff), group / D.group_mask_name(SPACE))
    cluster_rows, corr_rows = [], []
    for metric in metrics:
        mdir = group / metric
        mdir.mkdir(exist_ok=True)
        t = rng.normal(0, 1, shape).astype(np.float32) * gm
        corrp = {1: rng.uniform(0, 0.6, shape).astype(np.float32) * gm,
                 2: rng.uniform(0, 0.6, shape).astype(np.float32) * gm}
        cid = {"+": 0, "-": 0}
        labels = {"+": np.zeros(shape, np.int32), "-": np.zeros(shape, np.int32)}
        for m, sign, xyz, label, r in PLANTED:
            if m != metric:
                continue
            i, j, k = np.round(nib.affines.apply_affine(inv, xyz)).astype(int)
            sl = (slice(i - 1, i + 2), slice(j - 1, j + 2), slice(k - 1, k + 1))
            blob = 3.5 + 2.0 * rng.uniform(size=t[sl].shape)
            t[sl] = blob if sign == "+" else -blob
            corrp[D.CONTRAST_OF_SIGN[sign]][sl] = 0.99
            cid[sign] += 1
            labels[sign][sl] = cid[sign]
            peak = float(np.abs(t[sl]).max()) * (1 if sign == "+" else -1)
            cluster_rows.append(_cluster_row(metric, sign, cid[sign], xyz, label, peak,
                                             atlases))
            for method in ("pearson", "spearman"):
                values = {"cluster_id": cid[sign], "method": method, "n": n_subjects, "k": 4,
                          "r": r * 1.3, "ci_low": r * 1.3 - 0.2, "ci_high": r * 1.3 + 0.2,
                          "p": 0.004, "q_fdr": 0.01, "boot_ci_low": r - 0.25,
                          "boot_ci_high": r + 0.25, "loso_r": r, "loso_ci_low": r - 0.25,
                          "loso_ci_high": r + 0.25, "loso_p": 0.03, "loso_n": n_subjects,
                          "loso_rank": 1, "loso_mean_overlap": 0.9,
                          "r_interpretation": "descriptive: cluster selected on the same data"}
                corr_rows.append({**{c: values[c] for c in D.CORRELATION_COLUMNS},
                                  D.METRIC: metric, D.SIGN: sign})
            tag = D.region_tag(metric, sign)
            _png(mdir / D.scatter_name(tag, D.cluster_figure_key(cid[sign])), cid[sign],
                 size=(3, 3))
            for vocab in D.VOCABULARIES:
                stem = D.decoding_stem(tag, vocab, cid[sign])
                dec = group / D.DECODING_DIR
                dec.mkdir(exist_ok=True)
                stat = np.linspace(4, -1, 12)
                q = np.linspace(1e-3, 0.99, 12)
                values = {"feature": [f"{vocab}_{q}" for q in range(12)],
                          "label": [f"emotion <{q}> & memory" for q in range(12)],
                          "n_selected": 100, "p_roi_given_feature": 0.1,
                          "p_roi_given_other": 0.05, "log_odds": stat, "z": stat * 2,
                          "p": np.linspace(1e-4, 0.9, 12), "p_method": "fisher", "q": q,
                          "p_perm": 0.01, "p_null": 0.01, "q_null": 0.02, "r": np.nan,
                          "significant": q < 0.05}
                table = pd.DataFrame({c: values[c] for c in D.DECODING_COLUMNS})
                table.to_csv(dec / D.decoding_table_name(stem), sep="\t", index=False)
                if vocab == "lda50":  # the other vocabulary has no PNG: the report draws it
                    _png(dec / D.decoding_figure_name(stem, "bar"), 7, size=(3, 3))
                    _png(dec / D.decoding_figure_name(stem, "polar"), 8, size=(3, 3))
        maps = {D.tstat_key(1): t, D.tstat_key(2): -t, D.corrp_key("tfce", 1): corrp[1],
                D.corrp_key("tfce", 2): corrp[2], D.corrp_key("vox", 1): corrp[1],
                D.stat_key("tfce", 1): t}
        for key, data in maps.items():
            nib.save(nib.Nifti1Image(data, aff), mdir / D.randomise_map_name(metric, key))
        for sign in D.SIGNS:
            if labels[sign].any():
                nib.save(nib.Nifti1Image(labels[sign], aff),
                         mdir / D.region_file(D.region_tag(metric, sign), "label_img"))
        (mdir / D.randomise_sidecar_name(metric)).write_text(json.dumps(
            {"Parameters": {"n_perm": 500, "tfce_H": 2.0}, "SoftwareVersions": {"numba": "0.60"}}))
    pd.DataFrame(cluster_rows).to_csv(group / D.CLUSTERS_TSV, sep="\t", index=False)
    pd.DataFrame(corr_rows).to_csv(group / D.CORRELATIONS_TSV, sep="\t", index=False)
    if with_planted:
        rows = []
        for k, (m, s, xyz, label, r) in enumerate(PLANTED):
            found = m in metrics and k != 4
            values = {"region": label, "hemisphere": "L" if xyz[0] < 0 else "R", "metric": m,
                      "sign": s, "planted_r": r, "study_r": r, "found": found,
                      "found_r": r + 0.05 if k != 4 else None,
                      "loso_r": r + 0.05 if k != 4 else None,
                      "peak_distance_mm": 3.5 if k != 4 else None,
                      "cluster_id": 1 if found else None, "status": "found" if found else "missed"}
            rows.append({c: values[c] for c in D.PLANTED_COLUMNS})
        rows.append({"region": D.NOT_PLANTED, "hemisphere": "", "metric": "md", "sign": "+",
                     "planted_r": 0.0, "study_r": None, "found": False, "found_r": None,
                     "loso_r": None, "peak_distance_mm": None, "cluster_id": 1,
                     "status": "false positive"})
        pd.DataFrame(rows, columns=list(D.PLANTED_COLUMNS)).to_csv(
            group / D.PLANTED_TSV, sep="\t", index=False)
    return out
