"""Decoding speed as users meet it: fresh processes, warm and cold caches.

    MICROVBA_DATA=... .venv/bin/python benchmarks/bench_decode_speed.py [--runs 5]
        [--terms] [--nimare]

1. Warm command line: ``microvba decode --roi A23c --labels ... -o OUT`` (1,000-ROI spatial
   null, bar and polar figures, TSV and JSON sidecars), each run a fresh process on a warm
   map cache; median of ``--runs``. Also the same ROI through the API in one process.
2. Cold build in a fresh process: ``Decoder("lda50").fit()`` on an empty map cache (imports,
   database parsing, incidence matrix, 50 maps written); median of ``--runs``; once with
   the MNI brain-mask grid already in the cache (the maps cold, as after a parameter
   change) and once with nothing cached (the grid resampled by nilearn, as on first use).
   With ``--terms`` also the 2,003 NeuroQuery term maps (one run, grid cached). Each cold
   build is also timed with the parsed database copy cached (``<cache>/databases/``): the
   maps are still computed from the peaks and written, only the text parse is skipped.
3. ``--nimare``: NiMARE's fast route in this process, side by side: ``CorrelationDecoder``
   (MKDAChi2, same 6 mm kernel and 0.05 threshold) fitted on a Studyset (the conversion
   timed apart), and the ratio fit / microvba's fresh-process cold build.

Every figure is printed with ``os.getloadavg()`` (the machine is shared).

4. ``--components`` (issue 16, third pass): the warm command line's parts, each in a fresh
   process on the warm cache: the command's own process (python + imports, ROI voxels read
   or from the ROI cache, ``Decoder.fit``, ``decode_roi`` with the null, TSV and sidecar)
   and the figure child (matplotlib import, bar and polar plots), CPU (user + sys) and
   wall; then the whole command's CPU split between its process and its figure children.
5. ``--against REV``: the warm command line of git revision ``REV`` (its ``src`` exported
   to a temporary folder) and of this tree, alternating in fresh processes ``--runs``
   times each, tables compared byte for byte.
6. ``--cold-against REV`` (issue 16, fourth pass): the cold LDA-50 build of ``REV`` and of
   this tree, alternating in fresh processes ``--runs`` times each (MNI grid and parsed
   database copy cached, as in item 2), wall and CPU (user, sys; the build's child
   processes included); every file of the cache entries compared byte for byte.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROVBA_DATA", ROOT.parent / "shared" / "data"))
ATLAS = DATA / "atlases" / "brainnetome" / "BN_Atlas_246_1mm_spmgrid.nii.gz"
CLI = [sys.executable, "-m", "microvba"]


def _load() -> str:
    return "loadavg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


#: CPU seconds (user + sys) of every finished child process, per call of :func:`_timed`
CPU: list[float] = []


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], env: dict) -> float:
    """Wall seconds of a fresh process; its CPU seconds (user + sys, all threads) are
    appended to :data:`CPU` (the figure a loaded machine distorts least)."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    CPU.append(_children_cpu() - c0)
    return wall


def _cpu(n: int) -> str:
    return f"CPU (user+sys) median {statistics.median(CPU[-n:]):.2f} s"


def _build_cmd(vocabulary: str) -> list[str]:
    return [sys.executable, "-c",
            f"from microvba.decode import Decoder; Decoder({vocabulary!r}).fit()"]


def _cold_parsed_cached(runs: int, env: dict, tmp: Path, grids: list[Path],
                        vocabulary: str = "lda50") -> tuple[float, float, list[float]]:
    """Cold builds in fresh processes with the MNI grid and the parsed database copy
    (``<cache>/databases/``, :func:`microvba.decode.database.load_database`) cached: every
    map is still computed from the peaks and written; only the text parse is skipped.
    Returns the median wall, median CPU and the wall of every run."""
    seed = tmp / f"parsed-seed-{vocabulary}"
    seed.mkdir()
    subprocess.run([sys.executable, "-c", "from microvba.decode import load_vocabulary; "
                    f"load_vocabulary({vocabulary!r})"],
                   env=dict(env, MICROVBA_CACHE=str(seed)), check=True)
    walls, cpus = [], []
    for i in range(runs):
        folder = tmp / f"cold-parsed-{vocabulary}{i}"
        shutil.copytree(seed / "databases", folder / "databases")
        for g in grids:
            shutil.copy(g, folder / g.name)
        walls.append(_timed(_build_cmd(vocabulary), dict(env, MICROVBA_CACHE=str(folder))))
        cpus.append(CPU[-1])
    return statistics.median(walls), statistics.median(cpus), walls


_PHASES = r"""
import json, os, resource, sys, time
def ru():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, time.perf_counter()
out, last = {}, ru()
def lap(name):
    global last
    now = ru(); out[name] = (now[0] - last[0], now[1] - last[1]); last = now
atlas, labels, tmp = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], sys.argv[3]
if sys.argv[4] == "parent":
    import microvba.cli.decode, microvba.decode.writer
    lap("python + imports (numpy, pandas, scipy.sparse, nibabel, microvba)")
    from microvba.decode.decoder import Decoder
    from microvba.decode.grid import check_roi_extent, mni_brain_grid, select_roi
    from microvba.decode.roi_cache import roi_grid_voxels
    grid = mni_brain_grid(2.0)
    lap("MNI grid (cached)")
    check_roi_extent(select_roi(atlas, labels=labels), grid)
    lap("ROI voxels, read from the 1 mm atlas")
    vox = roi_grid_voxels(atlas, grid, labels=labels)
    lap("ROI voxels, from the ROI cache")
    dec = Decoder("lda50").fit()
    lap("Decoder.fit (warm map cache)")
    table = dec.decode_roi(atlas, voxels=vox)
    lap("decode_roi with the 1,000-ROI null")
    from microvba._provenance import make_sidecar, write_json
    from microvba.decode.writer import write_table
    write_table(table, os.path.join(tmp, "t.tsv"))
    write_json(os.path.join(tmp, "t.json"), make_sidecar({}, {"roi": atlas}))
    lap("TSV + sidecar (input hash)")
    table.to_pickle(os.path.join(tmp, "t.pkl"))
else:
    import pandas as pd
    import microvba.decode.writer as w
    table = pd.read_pickle(os.path.join(tmp, "t.pkl"))
    last = ru()
    import matplotlib.figure
    from microvba.decode import figures
    figures._text_width_pt(["warm up"], 8)
    lap("matplotlib import + font")
    tasks = w.figure_tasks(table, os.path.join(tmp, "A23c"))
    w.draw_figure(tasks[0])
    lap("bar plot")
    w.draw_figure(tasks[1])
    lap("polar plot")
print(json.dumps(out))
"""

_SPLIT = r"""
import resource, sys
from microvba.cli import main
code = main(sys.argv[1:])
s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print("RUSAGE", s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime)
sys.exit(code)
"""


def _components(env: dict, runs: int, tmp: Path) -> None:
    """Item 4 of the module docstring: medians of ``runs`` fresh processes per part."""
    import json

    labels = "185,186"
    parts: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        for role in ("parent", "figures"):
            res = subprocess.run([sys.executable, "-c", _PHASES, str(ATLAS), labels, str(tmp),
                                  role], env=env, check=True, capture_output=True, text=True)
            for name, cw in json.loads(res.stdout.strip().splitlines()[-1]).items():
                parts.setdefault(f"{role}: {name}", []).append(tuple(cw))
    print(f"warm CLI components, median of {runs} fresh processes (CPU = user + sys):")
    for name, vals in parts.items():
        print(f"  {name:78s} CPU {statistics.median(v[0] for v in vals):.3f} s  wall "
              f"{statistics.median(v[1] for v in vals):.3f} s")
    cmd = ["decode", "--roi", str(ATLAS), "--labels", "185", "186", "--prefix", "A23c",
           "-o", str(tmp / "split"), "-q"]
    own, kids, walls = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _SPLIT, *cmd], env=env, check=True,
                             capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        line = next(x for x in res.stdout.splitlines() if x.startswith("RUSAGE"))
        own.append(float(line.split()[1]))
        kids.append(float(line.split()[2]))
    print(f"  whole warm CLI, median of {runs}: wall {statistics.median(walls):.2f} s (min "
          f"{min(walls):.2f}); CPU of its process {statistics.median(own):.2f} s + figure "
          f"children {statistics.median(kids):.2f} s; {_load()}")


def _trees(rev: str, tmp: Path) -> dict[str, Path]:
    """``src`` of git revision ``rev`` (extracted under ``tmp``) and of this tree."""
    old = tmp / f"rev-{rev}"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    return {rev: old / "src", "this tree": ROOT / "src"}


def _against(rev: str, env: dict, runs: int, tmp: Path) -> None:
    """Item 5 of the module docstring."""
    trees = _trees(rev, tmp)
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    for src in trees.values():  # each tree's own caches built (its map cache key may differ)
        _timed(CLI + ["decode", "--roi", str(ATLAS), "--labels", "185", "186", "-o",
                      str(tmp / "warm-up"), "-q"], dict(env, PYTHONPATH=str(src)))
    for _ in range(runs):
        for name, src in trees.items():
            out = tmp / f"against-{name.replace(' ', '-')}"
            cmd = CLI + ["decode", "--roi", str(ATLAS), "--labels", "185", "186", "--prefix",
                         "A23c", "-o", str(out), "-q"]
            wall = _timed(cmd, dict(env, PYTHONPATH=str(src)))
            res[name].append((wall, CPU[-1]))
    for name, vals in res.items():
        walls, cpus = [v[0] for v in vals], [v[1] for v in vals]
        print(f"warm CLI decode --roi A23c, {name}: wall median {statistics.median(walls):.2f} s "
              f"(min {min(walls):.2f}); CPU (user+sys, with children) median "
              f"{statistics.median(cpus):.2f} s (min {min(cpus):.2f}); alternating, {runs} "
              f"each; {_load()}")
    a, b = (tmp / f"against-{n.replace(' ', '-')}" / "A23c_vocab-lda50_decoding.tsv"
            for n in trees)
    print(f"  tables byte-identical: {a.read_bytes() == b.read_bytes()}")


def _cold_against(rev: str, env: dict, runs: int, tmp: Path) -> None:
    """Item 6 of the module docstring."""
    trees = _trees(rev, tmp)
    seed = tmp / "seed"  # the MNI grid and the parsed database copy
    subprocess.run(_build_cmd("lda50"), env=dict(env, MICROVBA_CACHE=str(seed)), check=True)
    res: dict[str, list[tuple[float, float, float]]] = {k: [] for k in trees}
    entries: dict[str, Path] = {}
    for name, src in trees.items():  # compile each tree's numba kernels once
        subprocess.run(_build_cmd("lda50"), check=True, env=dict(
            env, PYTHONPATH=str(src), MICROVBA_CACHE=str(tmp / f"warm-{len(entries)}")))
        entries[name] = tmp / f"warm-{len(entries)}"
    for i in range(runs):
        for name, src in trees.items():
            folder = tmp / f"cold-{name.replace(' ', '-')}-{i}"
            shutil.copytree(seed / "databases", folder / "databases")
            for g in seed.glob("mni152-brain-mask_*.npz"):
                shutil.copy(g, folder / g.name)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(_build_cmd("lda50"), check=True,
                           env=dict(env, PYTHONPATH=str(src), MICROVBA_CACHE=str(folder)))
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            res[name].append((wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
    for name, vals in res.items():
        w, u, s = ([v[k] for v in vals] for k in range(3))
        cpu = statistics.median(a + b for a, b in zip(u, s, strict=True))
        print(f"cold LDA-50 build (grid and parsed copy cached), {name}: wall median "
              f"{statistics.median(w):.2f} s (min {min(w):.2f}); user {statistics.median(u):.2f}"
              f" s, sys {statistics.median(s):.2f} s (CPU {cpu:.2f} s); alternating, {runs} "
              f"each; {_load()}")
    (a, wa), (b, wb) = ((n, [v[0] for v in res[n]]) for n in trees)
    print(f"  ratio {a} / {b}: {statistics.median(wa) / statistics.median(wb):.2f}x wall")
    dirs = [next(entries[n].glob("neurosynth-*")) for n in trees]
    same = all((dirs[0] / f.name).read_bytes() == f.read_bytes()
               for f in dirs[1].iterdir() if f.name != "maps.json")
    print(f"  cache entries byte-identical (maps.json aside): {same}; names equal: "
          f"{dirs[0].name == dirs[1].name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--terms", action="store_true", help="also build the term maps")
    ap.add_argument("--nimare", action="store_true", help="NiMARE's fit side by side")
    ap.add_argument("--components", action="store_true",
                    help="only the warm CLI's parts (item 4), then exit")
    ap.add_argument("--against", metavar="REV", default=None,
                    help="only the warm CLI of git revision REV vs this tree (item 5)")
    ap.add_argument("--cold-against", metavar="REV", default=None,
                    help="only the cold LDA-50 build of git revision REV vs this tree "
                         "(item 6)")
    args = ap.parse_args()
    env = dict(os.environ, MICROVBA_PROGRESS="0")
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        tmp = Path(tmp)
        if args.cold_against:
            _cold_against(args.cold_against, env, args.runs, tmp)
            return 0
        if args.components or args.against:
            env_warm = dict(env, MICROVBA_CACHE=str(tmp / "warm"))
            cmd = CLI + ["decode", "--roi", str(ATLAS), "--labels", "185", "186",
                         "--prefix", "A23c", "-o", str(tmp / "out"), "-q"]
            _timed(cmd, env_warm)  # build the map cache, then the ROI cache
            _timed(cmd, env_warm)
            if args.components:
                _components(env_warm, args.runs, tmp)
            if args.against:
                _against(args.against, env_warm, args.runs, tmp)
            return 0
        # 1. warm CLI ------------------------------------------------------------
        env_warm = dict(env, MICROVBA_CACHE=str(tmp / "warm"))
        cmd = CLI + ["decode", "--roi", str(ATLAS), "--labels", "185", "186",
                     "--prefix", "A23c", "-o", str(tmp / "out"), "-q"]
        first = _timed(cmd, env_warm)  # builds the cache (and numba's)
        print(f"first CLI call (builds the map cache): {first:.2f} s; {_load()}")
        warm = [_timed(cmd, env_warm) for _ in range(args.runs)]
        print(f"warm CLI decode --roi, 1,000-ROI null, median of {args.runs} fresh processes: "
              f"{statistics.median(warm):.2f} s (min {min(warm):.2f}, max {max(warm):.2f}); "
              f"{_cpu(args.runs)}; {_load()}")
        imp = [_timed([sys.executable, "-c", "import microvba.cli.decode, microvba.decode"],
                      env_warm) for _ in range(args.runs)]
        print(f"  of which python + imports: median {statistics.median(imp):.2f} s; "
              f"{_cpu(args.runs)}")
        os.environ["MICROVBA_CACHE"] = str(tmp / "warm")
        from microvba.decode import Decoder
        from microvba.decode.grid import atlas_roi

        t0 = time.perf_counter()
        dec = Decoder("lda50", n_null=1000).fit()
        fit_s = time.perf_counter() - t0
        roi = atlas_roi(ATLAS, [185, 186])
        dec.decode_roi(roi)
        api, api_cpu = [], []
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            dec.decode_roi(roi)
            api.append(time.perf_counter() - t0)
            api_cpu.append(time.process_time() - c0)
        print(f"API: Decoder.fit on a warm cache {fit_s:.2f} s; decode_roi with the null, "
              f"median of {args.runs}: {statistics.median(api):.3f} s (CPU "
              f"{statistics.median(api_cpu):.3f} s); {_load()}")
        # 2. cold builds in fresh processes ----------------------------------------
        grids = list((tmp / "warm").glob("mni152-brain-mask_*.npz"))
        cold, cold_cpu = [], []
        for i in range(args.runs):
            folder = tmp / f"cold{i}"
            folder.mkdir()
            for g in grids:  # the grid cached: only the maps are built
                shutil.copy(g, folder / g.name)
            cold.append(_timed(_build_cmd("lda50"), dict(env, MICROVBA_CACHE=str(folder))))
            cold_cpu.append(CPU[-1])
        cold_s, cold_c = statistics.median(cold), statistics.median(cold_cpu)
        print(f"cold build of the 50 LDA topic maps, fresh process (imports, database, "
              f"incidence, maps; MNI grid cached), median of {args.runs}: {cold_s:.2f} s "
              f"(min {min(cold):.2f}); CPU (user+sys) median {cold_c:.2f} s; {_load()}")
        empty = [_timed(_build_cmd("lda50"), dict(env, MICROVBA_CACHE=str(tmp / f"empty{i}")))
                 for i in range(args.runs)]
        empty_s, empty_c = statistics.median(empty), statistics.median(CPU[-args.runs:])
        print(f"  same on an empty cache (the MNI grid resampled by nilearn too), median of "
              f"{args.runs}: {empty_s:.2f} s (min {min(empty):.2f}); CPU (user+sys) median "
              f"{empty_c:.2f} s; {_load()}")
        parsed_s, parsed_c, parsed = _cold_parsed_cached(args.runs, env, tmp, grids)
        print(f"  same with the parsed database cached too (maps still built from the peaks "
              f"and written), median of {args.runs}: {parsed_s:.2f} s (min "
              f"{min(parsed):.2f}); CPU (user+sys) median {parsed_c:.2f} s; {_load()}")
        if args.terms:
            folder = tmp / "terms"
            folder.mkdir()
            for g in grids:
                shutil.copy(g, folder / g.name)
            t = _timed(_build_cmd("terms"), dict(env, MICROVBA_CACHE=str(folder)))
            print(f"cold build of the NeuroQuery term maps, fresh process (MNI grid "
                  f"cached): {t:.2f} s; {_cpu(1)}; {_load()}")
            t, c, _ = _cold_parsed_cached(1, env, tmp, grids, "terms")
            print(f"  same with the parsed database cached too: {t:.2f} s; CPU (user+sys) "
                  f"{c:.2f} s; {_load()}")
        # 3. NiMARE side by side ------------------------------------------------------
        if args.nimare:
            sys.path.insert(0, str(Path(__file__).parent))
            import _nimare_decode as nd

            t0 = time.perf_counter()
            studyset = nd.load_studyset(DATA / "neurosynth")
            conv = time.perf_counter() - t0
            c0 = time.process_time()
            _, fit = nd.run_correlation_decoder(studyset, 6.0, 0.05)
            fit_cpu = time.process_time() - c0
            print(f"NiMARE CorrelationDecoder fit {fit:.1f} s wall, {fit_cpu:.1f} s CPU (+ "
                  f"Studyset conversion {conv:.1f} s); {_load()}")
            for what, w, c in (("MNI grid cached", cold_s, cold_c),
                               ("empty cache", empty_s, empty_c),
                               ("grid and parsed database cached", parsed_s, parsed_c)):
                print(f"  vs microvba fresh-process cold build ({what}) {w:.2f} s wall, "
                      f"{c:.2f} s CPU -> {fit / w:.0f}x wall, {fit_cpu / c:.0f}x CPU "
                      f"({(fit + conv) / w:.0f}x wall with the conversion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
