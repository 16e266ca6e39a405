"""Where the work runs: serially, on local processes, on a Dask scheduler or on SLURM.

One interface for every back end, :meth:`Executor.map`, which runs one task per item
(a subject, a chunk) and returns a :class:`TaskResult` per item *in input order*, so that
outputs never depend on the number of workers or on completion order. A failing task (bad
data discovered late, a worker killed for memory) is reported with its item and cause and
never stops the others.

Back ends
---------
- ``SerialExecutor``: the calling process; used for ``n_jobs=1``.
- ``DaskExecutor``: a ``distributed.Client`` on a ``LocalCluster`` (processes = cores, a memory
  limit per worker), on an existing scheduler (``--scheduler tcp://HOST:PORT``) or on a
  ``dask_jobqueue.SLURMCluster`` (``--cluster slurm``).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._logging import get_logger, progress
from .._resources import MAX_WORKERS, usable_cores
from .._validation import InputError, check_option_choice, check_option_number

log = get_logger(__name__)

#: seconds a local cluster may take to start before falling back to serial execution
CLUSTER_START_TIMEOUT = 20


@dataclass
class TaskResult:
    """Outcome of one task: its item, and either a value or an error message."""

    item: Any
    ok: bool
    value: Any = None
    error: str = ""


def _safe_call(func: Callable[[Any], Any], item: Any) -> TaskResult:
    # runs on the worker: turn any exception into a reportable result
    try:
        return TaskResult(item, True, func(item))
    except Exception as exc:  # noqa: BLE001 - one subject's failure must not stop the others
        log.debug("task %r failed:\n%s", item, traceback.format_exc())
        return TaskResult(item, False, error=f"{type(exc).__name__}: {exc}")


#: messages Dask logs while a cluster is shut down mid-run (Ctrl-C, SIGTERM): the tasks it
#: cancels and the connections it closes are expected then, not errors worth a traceback
_SHUTDOWN_NOISE = ("ended with CancelledError", "Failed to communicate with scheduler during "
                   "heartbeat", "Worker process still alive after", "Stream is closed",
                   "Connection to scheduler broken", "Scheduler closing")
_DASK_LOGGERS = ("distributed", "distributed.worker", "distributed.worker.state_machine",
                 "distributed.nanny", "distributed.core", "distributed.comm",
                 "distributed.comm.tcp", "distributed.scheduler", "distributed.client",
                 "distributed.batched", "distributed.worker.memory")


class ShutdownNoiseFilter:
    """Logging filter dropping :data:`_SHUTDOWN_NOISE` records (with their tracebacks)."""

    def filter(self, record: object) -> bool:
        try:
            text = record.getMessage()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a malformed record: keep it
            return True
        if getattr(record, "exc_info", None):
            text += " " + repr(record.exc_info[1])  # type: ignore[attr-defined,index]
        return not any(s in text for s in _SHUTDOWN_NOISE)


def quiet_shutdown() -> None:
    """Install :class:`ShutdownNoiseFilter` on Dask's loggers of this process (once)."""
    import logging

    for name in _DASK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ShutdownNoiseFilter) for f in logger.filters):
            logger.addFilter(ShutdownNoiseFilter())


class QuietShutdownPlugin:
    """Worker plugin running :func:`quiet_shutdown` in every worker process."""

    name = "microvba-quiet-shutdown"
    idempotent = True

    def setup(self, worker: object) -> None:
        quiet_shutdown()

    def teardown(self, worker: object) -> None:
        pass

    def transition(self, *args: object, **kwargs: object) -> None:
        pass


class SerialExecutor:
    """Run tasks one after another in the calling process."""

    n_workers = 1
    remote = False

    def map(self, func: Callable[[Any], Any], items: Sequence[Any],
            desc: str = "tasks") -> list[TaskResult]:
        return [_safe_call(func, it) for it in progress(items, desc, total=len(items))]

    def batch_map(self, func: Callable[[Any], Any], batches: Sequence[Any]) -> list[Any]:
        """Map without error capture (permutation batches: any failure is fatal)."""
        return [func(b) for b in batches]

    def close(self) -> None:
        pass

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SlurmOptions:
    """SLURM resources for ``dask_jobqueue.SLURMCluster`` (one Dask worker per job)."""

    queue: str | None = None
    cores: int = 4
    memory: str = "16GB"
    walltime: str = "02:00:00"
    jobs: int = 4
    account: str | None = None
    job_extra_directives: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_option_number("--slurm-cores", self.cores, 1, 1024, integer=True)
        check_option_number("--slurm-jobs", self.jobs, 1, 10000, integer=True)

    def cluster(self) -> Any:
        from dask_jobqueue import SLURMCluster

        return SLURMCluster(queue=self.queue, account=self.account, cores=self.cores,
                            processes=1, memory=self.memory, walltime=self.walltime,
                            job_extra_directives=list(self.job_extra_directives),
                            job_name="microvba")


class DaskExecutor:
    """Run tasks on a ``distributed`` cluster.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    cluster
        The cluster object this executor started (closed with it), if any.
    remote
        True when the workers are other machines (a scheduler or SLURM): permutation
        batches are then shipped to them; on a local cluster they run on threads in the
        calling process instead, which avoids copying the data to every worker.
    """

    def __init__(self, client: Any, cluster: Any = None, remote: bool = True) -> None:
        self.client = client
        self.cluster = cluster
        self.remote = remote

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, func: Callable[[Any], Any], items: Sequence[Any],
            desc: str = "tasks") -> list[TaskResult]:
        from distributed import as_completed

        futures = [self.client.submit(_safe_call, func, it, pure=False) for it in items]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[TaskResult | None] = [None] * len(items)
        for fut in progress(as_completed(futures), desc, total=len(futures)):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after an OOM
                results[i] = TaskResult(items[i], False, error=f"{type(exc).__name__}: {exc}")
        return [r for r in results if r is not None]

    def batch_map(self, func: Callable[[Any], Any], batches: Sequence[Any]) -> list[Any]:
        """Map without error capture, results in input order (permutation batches)."""
        futures = self.client.map(func, list(batches), pure=False)
        return self.client.gather(futures)

    def close(self) -> None:
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            if not self.remote:  # local workers are gone: remove what they left in /tmp
                clean_stale_tempdirs()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_workers() -> int:
    """Number of usable cores (respects CPU affinity, e.g. SLURM or taskset)."""
    return usable_cores()


def check_n_jobs(n_jobs: object, oversubscribe: bool = False, option: str = "--n-jobs",
                 cores: int | None = None) -> int | None:
    """Validate a worker count; return it capped to the usable cores.

    ``None`` means one worker per usable core. An integer >= 1 is required; more workers
    than cores (:func:`default_workers`) are reduced to the number of cores with a warning,
    unless ``oversubscribe`` (``--oversubscribe``) asks for them explicitly; even then at
    most :data:`microvba._resources.MAX_WORKERS`.
    """
    if n_jobs is None:
        return None
    n = check_option_number(option, n_jobs, 1, None, integer=True,
                            hint="the number of worker processes; 1 runs serially")
    cores = usable_cores() if cores is None else cores
    if n > MAX_WORKERS:
        raise InputError(f"{option} {n} is more than {MAX_WORKERS} workers", file=option,
                         fix=f"Pass {option} of at most {cores} (the usable cores here).")
    if n > cores and not oversubscribe:
        log.warning("%s %d is more than the %d usable core(s): using %d (pass --oversubscribe "
                    "to start %d workers anyway)", option, n, cores, cores, n)
        return cores
    return n


@dataclass(frozen=True)
class ExecutionSettings:
    """Where the work runs (``--n-jobs``, ``--oversubscribe``, ``--scheduler``,
    ``--cluster``); checked when built, ``n_jobs`` capped to the usable cores."""

    n_jobs: int | None = None
    oversubscribe: bool = False
    scheduler: str | None = None
    cluster: str = "local"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_jobs", check_n_jobs(self.n_jobs, self.oversubscribe))
        check_option_choice("--cluster", self.cluster, ("local", "slurm"))
        if self.scheduler is not None and "://" not in str(self.scheduler):
            raise InputError(f"--scheduler must be an address such as tcp://HOST:PORT; got "
                             f"{self.scheduler!r}", file="--scheduler",
                             fix="Pass the address the Dask scheduler prints, e.g. "
                                 "tcp://10.0.0.1:8786.")


def _register_quiet(client: Any) -> None:
    try:
        from distributed.diagnostics.plugin import WorkerPlugin

        plugin = type("MicrovbaQuietShutdown", (QuietShutdownPlugin, WorkerPlugin), {})
        client.register_plugin(plugin())
    except Exception as exc:  # noqa: BLE001 - cosmetic: never stop a run for it
        log.debug("could not register the worker log filter: %s", exc)


def loopback_works(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to 127.0.0.1 can be made (not so in a network namespace
    whose loopback is down, where a local cluster would wait for its timeout)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=timeout):
                pass
        return True
    except OSError:
        return False


def _local_cluster(n: int, memory_limit: str) -> Any:
    """A ``LocalCluster`` of ``n`` processes; raises when it cannot start (e.g. no loopback
    network), quickly rather than after Dask's 60 s default."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.comm.timeouts.connect": f"{CLUSTER_START_TIMEOUT}s"}):
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                            memory_limit=memory_limit, dashboard_address=None)


def make_executor(n_jobs: int | None = None, scheduler: str | None = None,
                  cluster: str = "local", slurm: SlurmOptions | None = None,
                  memory_limit: str = "auto") -> SerialExecutor | DaskExecutor:
    """Build the executor for a run.

    Parameters
    ----------
    n_jobs
        Local worker processes (default: the number of cores); 1 runs serially.
    scheduler
        Address of a running Dask scheduler (``tcp://HOST:PORT``); overrides ``cluster``.
    cluster
        ``"local"`` or ``"slurm"``.
    slurm
        Resources of the SLURM jobs.
    memory_limit
        Per-worker memory limit of a local cluster (Dask syntax, ``"auto"`` splits RAM).
    """
    clean_stale_tempdirs()  # left by earlier runs that were killed
    if scheduler:
        from distributed import Client

        log.info("connecting to the Dask scheduler at %s", scheduler)
        return DaskExecutor(Client(scheduler))
    if cluster == "slurm":
        from distributed import Client

        opts = slurm or SlurmOptions()
        slurm_cluster = opts.cluster()
        slurm_cluster.scale(jobs=opts.jobs)
        log.info("started a SLURM cluster of %d jobs:\n%s", opts.jobs, slurm_cluster.job_script())
        return DaskExecutor(Client(slurm_cluster), slurm_cluster)
    n = default_workers() if n_jobs is None else int(n_jobs)
    if n <= 1:
        return SerialExecutor()
    from distributed import Client

    quiet_shutdown()
    try:
        if not loopback_works():
            raise OSError("the loopback network (127.0.0.1) is down or missing, which the "
                          "local Dask cluster needs")
        local = _local_cluster(n, memory_limit)
        client = Client(local)
        _register_quiet(client)
    except Exception as exc:  # noqa: BLE001 - e.g. no network (loopback down), port limits
        log.warning("could not start local worker processes (%s: %s); running serially "
                    "instead. On a machine without networking pass --n-jobs 1 to skip this "
                    "attempt.", type(exc).__name__, " ".join(str(exc).split())[:200])
        return SerialExecutor()
    log.info("started a local Dask cluster with %d worker processes", n)
    return DaskExecutor(client, local, remote=False)


#: prefix of the temporary folders of registrations (:mod:`microvba.registration.ants`)
TEMP_PREFIXES = ("microvba-xfm-",)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tempdirs(root: str | None = None, max_age_s: float = 86400.0) -> int:
    """Remove temporary folders left by killed microvba processes; return how many.

    A folder ``<tmp>/microvba-xfm-<pid>-*`` is removed when process ``<pid>`` no longer
    runs; one without a process id (older versions) when it is older than ``max_age_s``.
    Only the current user's folders are touched.
    """
    import re
    import shutil
    import tempfile
    import time

    base = Path(root or tempfile.gettempdir())
    removed = 0
    for prefix in TEMP_PREFIXES:
        for path in base.glob(prefix + "*"):
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
                continue
            m = re.match(re.escape(prefix) + r"(\d+)-", path.name)
            stale = (not _pid_alive(int(m.group(1)))) if m else \
                time.time() - st.st_mtime > max_age_s
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed += not path.exists()
    if removed:
        log.debug("removed %d stale temporary folder(s) from %s", removed, base)
    return removed


def summarise_failures(results: Iterable[TaskResult], what: str = "subject") -> list[str]:
    """Log one line per failed task; return the lines."""
    lines = [f"{what} {getattr(r.item, 'prefix', r.item)}: {r.error}"
             for r in results if not r.ok]
    for line in lines:
        log.error("failed: %s", line)
    return lines
