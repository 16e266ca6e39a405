"""The cold map build's child process (microvba/decode/_child.py): results and errors come
back unchanged, the caller's state is untouched, and a build in a fresh process (where the
maps are computed in a forked child) writes the same bytes as one in this process."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from microvba.decode import _child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _work(x, fail=None):
    if fail == "disk":
        raise OSError(28, "No space left on device", "z_association.npy")
    if fail == "exit":
        os._exit(3)
    return {"pid": os.getpid(), "gc": gc.isenabled(), "x": x * 2,
            "omp": os.environ.get("OMP_WAIT_POLICY")}


@pytest.mark.parametrize("fork", [True, False])
def test_result_comes_back(fork):
    omp, enabled = os.environ.get("OMP_WAIT_POLICY"), gc.isenabled()
    call = _child.ChildCall(_work, 21, fork=fork)
    assert call.forked == fork
    out = call.result()
    assert out["x"] == 42
    if fork:  # ran elsewhere, with the collector off and OpenMP workers passive
        assert out["pid"] != os.getpid() and out["gc"] is False and out["omp"] == "PASSIVE"
    else:
        assert out["pid"] == os.getpid() and out["gc"] is enabled
    assert os.environ.get("OMP_WAIT_POLICY") == omp and gc.isenabled() is enabled
    assert call.result() == out  # asked twice, the same


@pytest.mark.parametrize("fork", [True, False])
def test_errors_come_back(fork):
    call = _child.ChildCall(_work, 1, "disk", fork=fork)
    with pytest.raises(OSError, match="No space left") as info:
        call.result()
    assert (info.value.errno, info.value.filename) == (28, "z_association.npy")
    if fork:
        assert isinstance(info.value.__cause__, _child.ChildTraceback)
        assert "_work" in str(info.value.__cause__)


def test_child_that_dies_is_an_error():
    call = _child.ChildCall(_work, 1, "exit", fork=True)
    with pytest.raises(RuntimeError, match="status 3 without a result"):
        call.result()


def test_fresh_process_builds_the_same_bytes(shared_data, tmp_path, monkeypatch):
    """The benchmark's cold build (a fresh process: the maps computed in a forked child,
    numba never imported by the caller) against a build in this process."""
    from microvba.decode import Decoder

    code = ("import sys; from microvba.decode import Decoder, _child; "
            "assert _child.can_fork(); "
            f"d = Decoder('lda50', data_dir={str(shared_data)!r}, "
            f"cache_dir={str(tmp_path / 'fresh')!r}).fit(); "
            "assert 'numba' not in sys.modules; print(d.maps_.path)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    monkeypatch.setattr(_child, "can_fork", lambda: False)
    ref = Decoder("lda50", data_dir=shared_data, cache_dir=tmp_path / "here").fit().maps_.path
    ours = tmp_path / "fresh" / os.path.basename(out)
    assert ours.name == ref.name and ours != ref
    for name in ("z_association.npy", "z_uniformity.npy", "features.tsv", "weights.npz",
                 "dropped.tsv", "peaks.npy"):
        assert (ours / name).read_bytes() == (ref / name).read_bytes(), name
    assert not [p for p in ours.iterdir() if p.name.startswith(".tmp-")]
