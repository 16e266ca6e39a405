"""Atomic writes and provenance sidecars.

Every output is written under a temporary name in the destination folder and renamed into
place (``os.replace`` is atomic on POSIX), so a killed run never leaves a truncated file.
Each output carries a JSON sidecar with its parameters, the software versions and the hashes
of its inputs; :func:`is_up_to_date` compares a sidecar against a planned run so that a
re-run skips finished work (Make-style, but keyed by content, not mtimes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = ".tmp-"

_TRACKED = ("microvba", "numpy", "scipy", "nibabel", "dipy", "antspyx", "nilearn", "numba",
            "pandas", "dask")


def _umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # fallback: set and restore (not thread safe, rarely reached)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the final suffixes (``.nii.gz``) so writers that infer the
    format from the name work unchanged. On error the temporary file is removed. The final
    file gets the permissions of a newly created file (``0o666 & ~umask``), not the
    owner-only mode of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # flush file contents to disk before the rename makes them visible
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write a binary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """Serialise to stable, indented JSON (numpy scalars/arrays and paths allowed)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as JSON."""
    return write_text(path, to_json(obj))


def save_nifti(img: Any, path: str | Path) -> Path:
    """Atomically save a nibabel image."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Atomically save a matplotlib figure."""
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return Path(path)


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hash of a file's content, ``"<algorithm>:<hex>"``."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable hash of a parameter mapping (order independent)."""
    return "sha256:" + hashlib.sha256(to_json(dict(params)).encode()).hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape the results."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _TRACKED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def make_sidecar(
    parameters: Mapping[str, Any],
    inputs: Mapping[str, str | Path] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a provenance sidecar: parameters, their hash, input hashes and versions."""
    input_hashes = {k: file_hash(v) for k, v in (inputs or {}).items()}
    return {
        "Parameters": dict(parameters),
        "ParametersHash": params_hash(parameters),
        "InputHashes": input_hashes,
        "SoftwareVersions": software_versions(),
        **extra,
    }


def is_up_to_date(
    outputs: list[str | Path],
    sidecar: str | Path,
    parameters: Mapping[str, Any],
    inputs: Mapping[str, str | Path] | None = None,
) -> bool:
    """True when every output exists and ``sidecar`` records these parameters and inputs."""
    sidecar = Path(sidecar)
    if not sidecar.exists() or not all(Path(o).exists() for o in outputs):
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if recorded.get("ParametersHash") != params_hash(parameters):
        return False
    expected = {k: file_hash(v) for k, v in (inputs or {}).items()}
    return recorded.get("InputHashes", {}) == expected


def _tmp_prefix() -> str:
    """``.tmp-<pid>@<host>@``: who writes a temporary file, so cleaning spares live writers."""
    return f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}@"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OSError, OverflowError):
        return False
    return True


def _is_abandoned(path: Path, stale_after_s: float) -> bool:
    """True when no live process can still be writing the temporary file ``path``."""
    owner = path.name[len(TMP_PREFIX):].split("@")
    if len(owner) < 3 or not owner[0].isdigit():
        return True  # not written by a running microvba (no owner in the name)
    pid, host = int(owner[0]), owner[1]
    if host == socket.gethostname():
        return pid != os.getpid() and not _pid_alive(pid)
    # another machine (shared file system): only its age tells
    try:
        return time.time() - path.stat().st_mtime > stale_after_s
    except FileNotFoundError:
        return False


def clean_temporaries(folder: str | Path, stale_after_s: float = 24 * 3600.0) -> int:
    """Remove temporary files left by killed runs below ``folder``; return how many.

    A temporary name records the process and host writing it (``.tmp-<pid>@<host>@...``), so
    runs sharing an output folder (e.g. one cluster job per subject, the BIDS-Apps way) do not
    delete each other's files in flight: a temporary file is removed when its process is gone
    (same host), or when it is older than ``stale_after_s`` seconds (another host).
    """
    n = 0
    for p in Path(folder).rglob(f"{TMP_PREFIX}*"):
        if p.is_file() and _is_abandoned(p, stale_after_s):
            p.unlink(missing_ok=True)
            n += 1
    return n
