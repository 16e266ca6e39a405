"""The same machine code whether numba compiled a kernel in this process or loaded it from
its on-disk cache (``cache=True``).

Why results could differ
------------------------
A numba function is compiled into its own library; every function it calls is linked into
the caller's module as a ``linkonce_odr`` copy (LLVM may optimise that copy again in the
caller's context) and the caller's object code, copies included, is what the cache stores.
When a process *compiles* a caller, its callees were compiled (and added to the JIT) first,
and the JIT resolves each call that was not inlined to the first definition of the symbol:
the callee's own library. When a process *loads* the caller from the cache, the callees'
own libraries are not loaded, so the copies inside the caller's object run. With
``fastmath`` (re-association, contraction into fused multiply-adds) the two versions round
differently: NODDI maps differed by ~1e-13 between a compiling and a caching process
(1,361 of 3,000 DSI-515 voxels, benchmarks/RESULTS.md, "Reproducibility audit
(session 8)"), while every cached run was bit-identical to every other.

:func:`load_cached_callees` loads the callees' own cached libraries, leaves first, before
the caller runs: the JIT then resolves every call exactly as in a compiling process. Kernels
without ``fastmath`` are not affected (LLVM's other transformations keep IEEE results), so
only the ``fastmath`` kernels call it.
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_DONE: set[int] = set()


def _callees(dispatcher) -> list:
    """Numba dispatchers named in ``dispatcher``'s code (its globals), in first-use order."""
    from numba.core.registry import CPUDispatcher

    func = dispatcher.py_func
    found = []
    for name in func.__code__.co_names:
        obj = func.__globals__.get(name)
        if isinstance(obj, CPUDispatcher) and obj is not dispatcher and obj not in found:
            found.append(obj)
    return found


def _post_order(root) -> list:
    """Every dispatcher reachable from ``root`` (``root`` excluded), callees before callers."""
    order: list = []
    seen = {id(root)}

    def visit(d) -> None:
        for c in _callees(d):
            if id(c) not in seen:
                seen.add(id(c))
                visit(c)
                order.append(c)

    visit(root)
    return order


def _load_from_cache(dispatcher) -> None:
    """Load every overload of ``dispatcher`` that its cache index holds for this machine and
    this source (a hit by construction: nothing is compiled unless a data file vanished)."""
    cache = getattr(dispatcher, "_cache", None)
    index_file = getattr(cache, "_cache_file", None)
    if index_file is None:  # caching disabled (NullCache)
        return
    codegen = dispatcher.targetctx.codegen()
    for key in index_file._load_index():
        sig = key[0]
        if cache._index_key(sig, codegen) == key:
            dispatcher.compile(sig)


def load_cached_callees(kernel) -> None:
    """Load, once per process, the cached libraries of every numba function ``kernel`` calls
    (directly or not), leaves first, so that a process that loads ``kernel`` from the cache
    runs the same machine code as one that compiles it (see the module docstring).

    Costs ~0.5 s once per process for the NODDI kernels (35 cached overloads), nothing later;
    without a cache (or with an empty one) it does nothing."""
    if id(kernel) in _DONE or not hasattr(kernel, "py_func"):  # done, or NUMBA_DISABLE_JIT
        return
    with _LOCK:
        if id(kernel) in _DONE:
            return
        for callee in _post_order(kernel):
            _load_from_cache(callee)
        _DONE.add(id(kernel))
