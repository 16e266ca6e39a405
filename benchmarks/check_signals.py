"""Interrupt a 2-worker participant run during registration and report how it ends (issue 14).

Starts ``microvba BIDS OUT participant --n-jobs 2``, waits until one of its registration
folders ``/tmp/microvba-xfm-<pid>-*`` appears, sends the signal, then prints the exit code,
whether a traceback or a Dask ``CancelledError`` was printed and which folders were left.

Usage::

    PYTHONPATH=src python -m microvba.cli simulate /tmp/bids --n-subjects 2
    PYTHONPATH=src python benchmarks/check_signals.py /tmp/bids /tmp/out SIGTERM
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def main() -> None:
    bids, out, name = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "SIGINT"
    pattern = os.path.join(tempfile.gettempdir(), "microvba-xfm-*")
    before = set(glob.glob(pattern))
    proc = subprocess.Popen([sys.executable, "-m", "microvba.cli", bids, out, "participant",
                             "--n-jobs", "2"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MICROVBA_PROGRESS": "0"})
    new: set[str] = set()
    t0 = time.time()
    while time.time() - t0 < 600 and not new and proc.poll() is None:
        new = {d for d in set(glob.glob(pattern)) - before
               if re.search(r"microvba-xfm-\d+-", d)}
        time.sleep(0.5)
    print(f"registration folders {sorted(new)} after {time.time() - t0:.0f} s")
    time.sleep(2)
    proc.send_signal(getattr(signal, name))
    err = proc.communicate(timeout=300)[1]
    print(f"{name}: exit code {proc.returncode}; left behind "
          f"{[d for d in new if os.path.exists(d)]}; traceback printed: {'Traceback' in err}; "
          f"CancelledError printed: {'CancelledError' in err}")
    print("\n".join(ln for ln in err.splitlines() if "ERROR" in ln or "WARNING" in ln))


if __name__ == "__main__":
    main()
