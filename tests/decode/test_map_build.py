"""The map build's shortcuts against the plain computations they replace: per-feature
counts from the sliding sphere window vs the study x voxel incidence matrix, and the parsed
copy of a database vs a fresh parse."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from microvba.decode import database as dbm
from microvba.decode.maps import _PeakCounter, mni_brain_grid, peak_activation


def _incidence_counts(peaks, n_studies, grid, kernel_mm, lists):
    """Reference: L^T A with A from the per-study sphere kernel (independent code)."""
    act = peak_activation(peaks[:, :3], peaks[:, 3], n_studies, grid, kernel_mm)
    act = sp.csr_matrix((np.ones(act.nnz, np.int64), act.indices, act.indptr), act.shape)
    counts = (sp.csr_matrix(lists.T.astype(np.int64)) @ act).toarray()
    n_active = np.asarray(act.sum(axis=0)).ravel()
    return counts, n_active


@pytest.mark.parametrize("kernel_mm", [0.0, 4.0, 6.0, 10.0])
def test_window_counts_equal_incidence_counts(rng, kernel_mm):
    """Peaks inside, at the edge of and far outside the grid; several peaks of a study in
    one voxel and in overlapping spheres; studies listing no, one or many features."""
    grid = mni_brain_grid(2.0)
    n_studies, n_feat = 300, 7
    n_peaks = rng.integers(1, 12, n_studies)
    peak_study = np.repeat(np.arange(n_studies), n_peaks)
    shape = np.asarray(grid.shape)
    pool = rng.integers(0, shape, size=(15, 3))  # studies share centres: overlaps
    centre = pool[rng.integers(0, len(pool), n_studies)][peak_study]
    ijk = centre + rng.integers(-2, 3, size=(peak_study.size, 3))  # clustered peaks
    edge = rng.uniform(size=peak_study.size) < 0.1
    ijk[edge] = rng.integers(-8, shape + 8, size=(int(edge.sum()), 3))  # near/out of grid
    ijk[:5] = [[-100, 0, 0], [0, 500, 0], [-3, -3, -3], [shape[0] + 2, 10, 10], [0, 0, 0]]
    peaks = np.column_stack([ijk, peak_study]).astype(np.int32)
    lists = sp.csr_matrix(rng.uniform(size=(n_studies, n_feat)) < [0, 0.05, 0.3, 0.5, 0.7,
                                                                       0.95, 1.0])
    counter = _PeakCounter(peaks, n_studies, grid, kernel_mm)
    counts = np.full((n_feat, grid.n_voxels), 99, np.uint16)
    n_active = np.full(grid.n_voxels, -1, np.int64)
    counter(lists, counts, n_active)
    ref_counts, ref_active = _incidence_counts(peaks, n_studies, grid, kernel_mm, lists)
    assert ref_active.max() >= 3  # overlapping studies: the test can fail
    np.testing.assert_array_equal(n_active, ref_active)
    np.testing.assert_array_equal(counts, ref_counts)


def test_window_counts_on_neurosynth(shared_data):
    """All 14,371 studies and 507,891 peaks with the 50 topics' selection (6 mm)."""
    db = dbm.load_database("neurosynth", shared_data)
    grid = mni_brain_grid(2.0)
    peaks = np.column_stack([grid.mm_to_ijk(db.xyz), db.peak_study]).astype(np.int32)
    lists = sp.csr_matrix(db.weights.toarray() >= 0.05)
    counts = np.empty((50, grid.n_voxels), np.int32)
    n_active = np.empty(grid.n_voxels, np.int64)
    _PeakCounter(peaks, db.n_studies, grid, 6.0)(lists, counts, n_active)
    ref_counts, ref_active = _incidence_counts(peaks, db.n_studies, grid, 6.0, lists)
    np.testing.assert_array_equal(n_active, ref_active)
    np.testing.assert_array_equal(counts, ref_counts)


def test_mm_to_ijk_equals_matrix_product(rng):
    grid = mni_brain_grid(2.0)
    xyz = np.concatenate([rng.uniform(-120, 120, (5000, 3)),
                          np.round(rng.uniform(-100, 100, (5000, 3))),
                          rng.integers(-50, 50, (5000, 3)) + 0.5])  # ties: half to even
    inv = np.linalg.inv(grid.affine)
    expected = np.round(xyz @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
    np.testing.assert_array_equal(grid.mm_to_ijk(xyz), expected)


def _same(a: dbm.Database, b: dbm.Database) -> None:
    for k in ("study_ids", "xyz", "peak_study"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert a.weights.dtype == b.weights.dtype and a.weights.shape == b.weights.shape
    assert (a.weights != b.weights).nnz == 0
    assert (a.features, a.labels, a.vocabulary, a.files) == (b.features, b.labels,
                                                              b.vocabulary, b.files)


@pytest.mark.parametrize("name", ["neurosynth", "neuroquery"])
def test_parsed_copy_equals_parse(shared_data, tmp_path, name):
    parsed = dbm.load_database(name, shared_data, cache=False)
    assert not (tmp_path / "databases").exists()
    first = dbm.load_database(name, shared_data, cache_dir=tmp_path)
    copy = dbm.parsed_cache_path(name, parsed.files, tmp_path)
    assert copy.is_file() and copy.parent == tmp_path / "databases"
    second = dbm.load_database(name, shared_data, cache_dir=tmp_path)  # from the copy
    _same(parsed, first)
    _same(parsed, second)


def test_parsed_copy_follows_the_source_files(shared_data, tmp_path):
    """A changed source file (size or mtime) gets a new copy; an unreadable copy is parsed
    again and replaced; no temporary files are left."""
    src = shared_data / "neurosynth"
    data = tmp_path / "data"
    (data / "neurosynth").mkdir(parents=True)
    for f in dbm.FILES["neurosynth"].values():
        os.symlink(src / f, data / "neurosynth" / f)
    cache = tmp_path / "cache"
    ref = dbm.load_database("neurosynth", data, cache_dir=cache)
    copy = dbm.parsed_cache_path("neurosynth", ref.files, cache)
    # a replaced vocabulary file (new mtime): another key, and the new content is read
    voc = data / "neurosynth" / dbm.FILES["neurosynth"]["vocabulary"]
    text = voc.read_text()
    voc.unlink()
    voc.write_text(text.replace(ref.features[0], "renamed_topic", 1))
    changed = dbm.load_database("neurosynth", data, cache_dir=cache)
    assert dbm.parsed_cache_path("neurosynth", changed.files, cache) != copy
    assert changed.features[0] == "renamed_topic" and ref.features[0] != "renamed_topic"
    # an unreadable copy: parsed again, rewritten
    path = dbm.parsed_cache_path("neurosynth", changed.files, cache)
    path.write_bytes(b"not a zip file")
    again = dbm.load_database("neurosynth", data, cache_dir=cache)
    _same(changed, again)
    assert path.stat().st_size > 1000
    assert sorted(p.name for p in (cache / "databases").iterdir()) == sorted(
        [copy.name, path.name])


def test_to_half_rounds_as_numpy(rng):
    """float32 -> float16 bits as ``astype(np.float16)`` (random bit patterns, ties,
    subnormals, overflow, NaN), and the mean / centred norm of the rounded values as
    :func:`mean_and_centred_norm` of their float32 copy."""
    from microvba.decode import _kernels

    z = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = (np.arange(-70000, 70000, dtype=np.float32) + 0.5) / 1024
    sub = np.arange(0, 2**15, dtype=np.float32) * np.float32(2**-26)
    edge = np.array([0, -0.0, 65504, 65519.99, 65520, 1e9, np.inf, -np.inf, np.nan, 6.1e-5,
                     5.96e-8, 2.98e-8, 2.99e-8, 2049, 2051], np.float32)
    x = np.concatenate([z, ties, sub, -sub, edge])[None]
    out = np.empty(x.shape, np.uint16)
    _kernels.to_half(x, out, np.zeros(1), np.zeros(1), False)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(out[~nan], ref.view(np.uint16)[~nan])
    assert np.isnan(out.view(np.float16)[nan]).all()
    # statistics of finite maps (z scale)
    maps = (rng.standard_normal((5, 20_000)) * rng.uniform(0.01, 30, (5, 1))).astype(np.float32)
    maps[0, :100] = 1e-7  # subnormal halves
    mean, norm = np.zeros(5), np.zeros(5)
    out = np.empty(maps.shape, np.uint16)
    _kernels.to_half(maps, out, mean, norm, True)
    np.testing.assert_array_equal(out, maps.astype(np.float16).view(np.uint16))
    m_ref, n_ref = _kernels.mean_and_centred_norm(maps.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(mean, m_ref)
    np.testing.assert_array_equal(norm, n_ref)


@pytest.mark.parametrize("fallback", ["none", "no_o_direct", "einval_on_write"])
def test_direct_writer_writes_the_bytes(rng, tmp_path, monkeypatch, fallback):
    """The file holds exactly the bytes written, whatever their sizes relative to the
    alignment and the staging buffer (empty, 1 byte, one block +/- 1, a .npy header then
    float32 rows, several staging buffers), with O_DIRECT, without it, and when the file
    system refuses it on the first write (EINVAL, then ordinary writes)."""
    from microvba.decode import _direct

    if fallback == "no_o_direct":
        monkeypatch.delattr(_direct.os, "O_DIRECT", raising=False)
    if fallback == "einval_on_write":
        if not hasattr(os, "O_DIRECT"):
            pytest.skip("no O_DIRECT on this platform")
        real_write, calls = os.write, []

        def refuse_once(fd, data):
            calls.append(len(data))
            if len(calls) == 1:
                raise OSError(22, "Invalid argument")
            return real_write(fd, data)

        monkeypatch.setattr(_direct.os, "write", refuse_once)
    rows = rng.standard_normal((7, 3001)).astype(np.float32)
    cases = {"empty": [], "one": [b"x"],
             "blocks": [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in
                        (4095, 1, 4096, 4097, 0, 12_289)],
             "npy": [b"\x93NUMPY" + bytes(122)] + [memoryview(r) for r in rows],
             "large": [rng.integers(0, 256, 3 * 8192 + 17, dtype=np.uint8)] * 3}
    direct = {}
    for name, parts in cases.items():
        path = tmp_path / f"{name}.bin"
        with _direct.DirectWriter(path, staging=8192) as fh:
            for p in parts:
                fh.write(p)
        direct[name] = fh.direct
        expected = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        assert path.read_bytes() == expected, name
    if fallback == "no_o_direct":
        assert not any(direct.values())
    if fallback == "einval_on_write":  # the first file written falls back, the next not
        assert calls[0] % 4096 == 0  # the refused write: one padded block of "one"
        assert not direct["one"] and direct["large"]


def test_chi2_stats_and_study_lists(rng):
    """The association rows' mean / centred norm computed inside ``chi2_z_maps`` are the
    bits :func:`mean_and_centred_norm` gives for the stored rows; ``_study_lists`` is the
    CSR scipy builds from the same boolean array."""
    from microvba.decode import _kernels
    from microvba.decode.maps import _study_lists

    n_studies, n_vox = 900, 5000
    n_active = rng.integers(0, 300, n_vox)
    n_sel = np.array([40, 450, 899, 1])
    counts = np.minimum(rng.integers(0, 60, (4, n_vox)), n_active).astype(np.uint16)
    counts[2] = n_active  # every active study selected
    za, zu = np.empty((4, n_vox), np.float32), np.empty((4, n_vox), np.float32)
    mean, norm = np.full(4, np.nan), np.full(4, np.nan)
    _kernels.chi2_z_maps(counts, n_active, n_sel, n_studies, za, zu, mean, norm, True)
    m_ref, n_ref = _kernels.mean_and_centred_norm(za)
    np.testing.assert_array_equal(mean, m_ref)
    np.testing.assert_array_equal(norm, n_ref)
    assert np.abs(za).max() > 1 and (norm > 0).all()
    dense = rng.uniform(size=(300, 7)) < [0, 0.05, 0.3, 0.5, 0.7, 0.95, 1.0]
    dense[:3] = False
    ours, ref = _study_lists(dense), sp.csr_matrix(dense)
    np.testing.assert_array_equal(ours.indptr, ref.indptr)
    np.testing.assert_array_equal(ours.indices, ref.indices)


def test_peak_voxels_in_blocks(rng):
    """The map build's peak voxels, computed in blocks, equal the whole-array expression
    they replace (ties rounded half to even, peaks far outside the grid)."""
    from microvba.decode.maps import _peak_voxels

    grid = mni_brain_grid(2.0)
    xyz = np.concatenate([rng.uniform(-300, 300, (70_001, 3)),
                          rng.integers(-50, 50, (5000, 3)) + 0.5])
    study = np.sort(rng.integers(0, 20_000, xyz.shape[0]))
    expected = np.column_stack([grid.mm_to_ijk(xyz), study]).astype(np.int32)
    for block in (1, 7, 1 << 15, 1 << 20):
        np.testing.assert_array_equal(_peak_voxels(grid, xyz[:3000] if block == 1 else xyz,
                                                   study[:3000] if block == 1 else study,
                                                   block=block),
                                      expected[:3000] if block == 1 else expected)


def test_unique_peak_index_both_routes(rng):
    """``peak_voxel_index(unique=True)``: peaks in study order (the sort-free route) and
    shuffled (the pair sort) give the index ``np.unique`` of (voxel, study) pairs gives."""
    from microvba.decode._roi_hits import peak_voxel_index

    shape, pad = (9, 11, 8), 2
    study = np.sort(rng.integers(0, 40, 3000))
    ijk = rng.integers(-4, 13, (3000, 3))
    ijk[::3] = ijk[1::3][: len(ijk[::3])]  # repeated voxels of a study
    padded = np.asarray(shape) + 2 * pad
    inside = np.all((ijk + pad >= 0) & (ijk + pad < padded), axis=1)
    key = np.ravel_multi_index((ijk[inside] + pad).T, tuple(padded))
    pairs = np.unique(np.column_stack([key, study[inside]]), axis=0)
    ref_ptr = np.r_[0, np.cumsum(np.bincount(pairs[:, 0], minlength=int(np.prod(padded))))]
    for perm in (np.arange(3000), rng.permutation(3000)):
        ptr, studies = peak_voxel_index(ijk[perm], study[perm], shape, pad, unique=True)
        np.testing.assert_array_equal(ptr, ref_ptr)
        np.testing.assert_array_equal(studies, pairs[:, 1])


def test_damaged_parsed_copy_is_parsed_again(shared_data, tmp_path):
    """A parsed copy whose weight arrays are inconsistent (scipy would refuse them when the
    matrix is made, now lazily) is not used: the database is parsed again."""
    ref = dbm.load_database("neurosynth", shared_data, cache_dir=tmp_path)
    path = dbm.parsed_cache_path("neurosynth", ref.files, tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["w_indptr"] = arrays["w_indptr"][:-1]  # one column short
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    assert dbm._load_parsed("neurosynth", path, ref.files) is None
    again = dbm.load_database("neurosynth", shared_data, cache_dir=tmp_path)
    _same(ref, again)
