"""Atomic writes, provenance sidecars, up-to-date checks, and SIGKILL in the middle of a write."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from microvba import _provenance as prov


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f"{prov.TMP_PREFIX}*"))


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_path_keeps_suffix_and_renames(tmp_path):
    final = tmp_path / "deep" / "er" / "sub-01_dwimap.nii.gz"
    with prov.atomic_path(final) as tmp:
        assert tmp.parent == final.parent  # same filesystem: rename is atomic
        assert tmp.name.startswith(prov.TMP_PREFIX) and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data"
    assert _temporaries(tmp_path) == []


def test_atomic_path_error_keeps_previous_content(tmp_path):
    final = tmp_path / "table.tsv"
    final.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"), prov.atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert final.read_text() == "old\n"
    assert _temporaries(tmp_path) == []


def test_atomic_file_has_default_permissions(tmp_path):
    """mkstemp creates 0600 files; outputs must get the usual umask-based mode."""
    umask = os.umask(0o022)
    try:
        path = prov.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_text_bytes_json(tmp_path):
    assert prov.write_text(tmp_path / "a.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert prov.write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    obj = {"b": np.float32(1.5), "a": np.arange(3), "p": Path("x/y"), "t": (1, 2),
           "i": np.int64(7), "flag": np.bool_(True)}
    out = prov.write_json(tmp_path / "c.json", obj)
    text = out.read_text()
    assert text.index('"a"') < text.index('"b"')  # sorted keys: stable files
    assert json.loads(text) == {"a": [0, 1, 2], "b": 1.5, "flag": True, "i": 7, "p": "x/y",
                                "t": [1, 2]}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        prov.to_json({"x": object()})
    assert _temporaries(tmp_path) == []


def test_save_nifti_and_figure(tmp_path, rng):
    data = rng.normal(size=(3, 4, 5)).astype(np.float32)
    path = prov.save_nifti(nib.Nifti1Image(data, np.eye(4)), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(nib.load(path).get_fdata(dtype=np.float32), data)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = prov.save_figure(fig, tmp_path / "f.png", dpi=20)
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = prov.save_figure(fig, tmp_path / "f.svg")
    assert b"<svg" in svg.read_bytes()[:500]
    assert _temporaries(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# hashes and sidecars


def test_file_hash_matches_hashlib(tmp_path):
    p = tmp_path / "x"
    payload = os.urandom(3 * 2**20 + 5)  # several read blocks
    p.write_bytes(payload)
    assert prov.file_hash(p) == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert prov.file_hash(p, "md5") == "md5:" + hashlib.md5(payload).hexdigest()


def test_params_hash_order_independent_and_sensitive():
    a = prov.params_hash({"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}})
    b = prov.params_hash({"z": {"a": 2, "b": 1}, "y": [1, 2], "x": 1})
    assert a == b and a.startswith("sha256:")
    assert prov.params_hash({"x": 1}) != prov.params_hash({"x": 2})
    assert prov.params_hash({"x": 1}) != prov.params_hash({"x": 1, "y": None})


def test_software_versions():
    v = prov.software_versions()
    assert v["python"] == sys.version.split()[0]
    assert v["numpy"] == np.__version__ and v["nibabel"] == nib.__version__
    assert "microvba" in v


def test_make_sidecar(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("input")
    car = prov.make_sidecar({"d_par": 1.7e-3}, {"dwi": src}, Model="noddi")
    assert car["Parameters"] == {"d_par": 1.7e-3}
    assert car["ParametersHash"] == prov.params_hash({"d_par": 1.7e-3})
    assert car["InputHashes"] == {"dwi": prov.file_hash(src)}
    assert car["Model"] == "noddi" and "numpy" in car["SoftwareVersions"]
    json.loads(prov.to_json(car))


def _finished_run(tmp_path, params):
    src, out, car = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "out.json"
    if not src.exists():
        src.write_text("input")
    prov.write_text(out, "result")
    prov.write_json(car, prov.make_sidecar(params, {"src": src}))
    return src, out, car


def test_is_up_to_date(tmp_path):
    params = {"n_perm": 100, "seed": 0}
    src, out, car = _finished_run(tmp_path, params)
    assert prov.is_up_to_date([out], car, params, {"src": src})
    assert prov.is_up_to_date([out], car, dict(reversed(params.items())), {"src": src})
    assert not prov.is_up_to_date([out], car, {**params, "seed": 1}, {"src": src})
    assert not prov.is_up_to_date([out], car, params, {"src": src, "other": src})
    assert not prov.is_up_to_date([out, tmp_path / "missing"], car, params, {"src": src})
    src.write_text("changed input")
    assert not prov.is_up_to_date([out], car, params, {"src": src})
    _finished_run(tmp_path, params)
    assert prov.is_up_to_date([out], car, params, {"src": src})
    car.write_text("{ truncated")
    assert not prov.is_up_to_date([out], car, params, {"src": src})
    car.unlink()
    assert not prov.is_up_to_date([out], car, params, {"src": src})


def test_clean_temporaries(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / f"{prov.TMP_PREFIX}x.nii.gz").write_bytes(b"half")
    (tmp_path / f"{prov.TMP_PREFIX}y.json").write_text("{")
    (tmp_path / "keep.json").write_text("{}")
    assert prov.clean_temporaries(tmp_path) == 2
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.json"]
    assert prov.clean_temporaries(tmp_path) == 0


# ---------------------------------------------------------------------------------------------
# SIGKILL in the middle of writing

_SLOW_TEXT = textwrap.dedent("""
    import sys, time
    from microvba._provenance import atomic_path
    out, version, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with atomic_path(out) as tmp:
        with open(tmp, "w") as fh:
            for i in range(200):
                fh.write(f"{version} line {i}\\n")
                fh.flush()
                if i == 10:
                    print("writing", flush=True)
                    time.sleep(pause)
    print("done", flush=True)
""")

_SLOW_NIFTI = textwrap.dedent("""
    import gzip, sys, time
    import nibabel as nib, numpy as np
    from microvba._provenance import save_nifti, write_json
    out, seed, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if pause:
        write = gzip.GzipFile.write
        def slow_write(self, data):
            n = write(self, data)
            print("writing", flush=True)
            time.sleep(pause)
            return n
        gzip.GzipFile.write = slow_write
    data = np.random.default_rng(seed).normal(size=(8, 8, 6, 5)).astype(np.float32)
    save_nifti(nib.Nifti1Image(data, np.eye(4)), out)
    write_json(out.replace(".nii.gz", ".json"), {"seed": seed})
    print("done", flush=True)
""")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def _kill_mid_write(script: str, *args: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "writing", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_sigkill_mid_write_keeps_previous_file_and_rerun_completes(tmp_path):
    out = tmp_path / "results" / "table.tsv"
    prov.write_text(out, "".join(f"v1 line {i}\n" for i in range(200)))
    _kill_mid_write(_SLOW_TEXT, out, "v2", 60)
    # the final name still holds the complete previous version, never a truncated one
    assert out.read_text() == "".join(f"v1 line {i}\n" for i in range(200))
    (left,) = _temporaries(tmp_path)
    assert left.read_text().startswith("v2 line 0\n")  # the killed write stayed aside
    res = _run(_SLOW_TEXT, out, "v3", 0)
    assert res.returncode == 0, res.stderr
    assert out.read_text() == "".join(f"v3 line {i}\n" for i in range(200))
    assert prov.clean_temporaries(tmp_path) == 1
    assert _temporaries(tmp_path) == []


def test_sigkill_during_save_nifti_leaves_no_truncated_image(tmp_path):
    out = tmp_path / "sub-01" / "dwi" / "sub-01_space-orig_model-tensor_param-fa_dwimap.nii.gz"
    _kill_mid_write(_SLOW_NIFTI, out, 1, 60)
    assert not out.exists()  # no file under the final name
    assert not out.with_name(out.name.replace(".nii.gz", ".json")).exists()
    left = _temporaries(tmp_path)
    assert left and all(p.name.endswith(".nii.gz") for p in left)
    assert prov.clean_temporaries(tmp_path) == len(left)
    res = _run(_SLOW_NIFTI, out, 1, 0)
    assert res.returncode == 0, res.stderr
    expected = np.random.default_rng(1).normal(size=(8, 8, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32), expected)
    assert json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text()) == {
        "seed": 1}
    assert _temporaries(tmp_path) == []


def test_sigkill_over_existing_nifti_keeps_it_loadable(tmp_path):
    out = tmp_path / "map.nii.gz"
    assert _run(_SLOW_NIFTI, out, 2, 0).returncode == 0
    _kill_mid_write(_SLOW_NIFTI, out, 3, 60)
    expected = np.random.default_rng(2).normal(size=(8, 8, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32), expected)
    prov.clean_temporaries(tmp_path)
    assert _run(_SLOW_NIFTI, out, 3, 0).returncode == 0
    expected = np.random.default_rng(3).normal(size=(8, 8, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32), expected)


def test_temporary_names_record_the_writer(tmp_path):
    import socket

    with prov.atomic_path(tmp_path / "a.nii.gz") as tmp:
        assert tmp.name.startswith(f"{prov.TMP_PREFIX}{os.getpid()}@{socket.gethostname()}@")
        tmp.write_bytes(b"x")


def test_clean_temporaries_spares_live_writers(tmp_path):
    """Runs sharing an output folder (one job per subject) never delete each other's files."""
    import socket
    import time

    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        files = {
            "own": f"{prov.TMP_PREFIX}{os.getpid()}@{host}@a.nii.gz",
            "live": f"{prov.TMP_PREFIX}{live.pid}@{host}@b.nii.gz",
            "dead": f"{prov.TMP_PREFIX}{dead.pid}@{host}@c.nii.gz",
            "remote_fresh": f"{prov.TMP_PREFIX}123@other-node@d.json",
            "remote_old": f"{prov.TMP_PREFIX}123@other-node@e.json",
            "legacy": f"{prov.TMP_PREFIX}f.json",
        }
        for name in files.values():
            (tmp_path / name).write_text("partial")
        old = time.time() - 2 * 24 * 3600
        os.utime(tmp_path / files["remote_old"], (old, old))
        assert prov.clean_temporaries(tmp_path) == 3
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {files["own"], files["live"], files["remote_fresh"]}
        assert prov.clean_temporaries(tmp_path, stale_after_s=0) == 1  # remote_fresh
    finally:
        live.kill()
        live.wait()
    assert prov.clean_temporaries(tmp_path) == 1  # the writer is gone now
