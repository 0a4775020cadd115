"""The export server: a process with one backend imported that forks a fresh child per job.

    python -m rules.execution.server <folder> <name> <backend> <idle seconds>

The parent imports Keras, TensorFlow (and JAX) but never runs an op and never
imports user code: TensorFlow's eager context and JAX's XLA client start
thread pools, and a child forked after that deadlocks (measured: both hang in
their first op). So every job gets a child that starts from the state of a
fresh worker whose imports are already done, imports the model code from disk
and exits; nothing leaks from one export to the next, nor from one workspace
to another: it serves every workspace of its environment. Clients reach it
over an AF_UNIX socket, <folder>/<name>.sock, in the per-user runtime folder
(see rules.execution.server.runtime and .client). It exits when idle, when its
socket is removed, on `stop`, `retire` and SIGTERM, and refuses jobs whose
toolchain fingerprint differs.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from pathlib import Path

from rules.core.errors import RulesError
from rules.core.fsio import write_json
from rules.core.toolchain import detect
from rules.execution.server.loop import Server
from rules.execution.server.process import log
from rules.execution.server.protocol import (
    ServerPaths,
    fingerprint,
    private_folder,
    socket_address,
)


def preload(backend: str) -> None:
    """Import everything a job needs that runs no op: Keras, the backend, our exporter."""
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import keras.export  # noqa: F401
    import tensorflow  # noqa: F401

    import rules.execution.exporter
    import rules.execution.formats.saved_model
    import rules.execution.trainer
    import rules.execution.worker  # noqa: F401

    if backend == "jax":
        import jax  # noqa: F401
        from jax.experimental import jax2tf  # noqa: F401


def bind(paths: ServerPaths) -> socket.socket:
    """Listen on the socket path, replacing a stale socket file left by a killed server."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with socket_address(paths.socket) as address:
        paths.socket.unlink(missing_ok=True)
        listener.bind(address)
    os.chmod(paths.socket, 0o600)
    listener.listen(64)
    return listener


def main(argv: list[str]) -> int:
    folder, name = Path(argv[1]), argv[2]
    backend, idle_timeout = argv[3], float(argv[4])
    # `python -m` put our working folder first on sys.path: the one holding
    # the rules package (client._spawn), already imported. Only children
    # import model code, each from its own workspace; this process must not
    # even be able to import any by accident.
    if sys.path and sys.path[0] == os.getcwd():
        del sys.path[0]
    os.chdir("/")
    try:
        paths = ServerPaths(private_folder(folder), name, backend)
        # No cache file: it would be one workspace's, and 0.1 s once per
        # server start is nothing next to the backend's import.
        fp = fingerprint(backend, detect().to_json())
        # The client that started us holds the start lock and cleaned up; bind
        # before the slow imports so that requests queue instead of failing.
        listener = bind(paths)
        write_json(paths.info, {"pid": os.getpid(), "backend": backend, "fingerprint": fp,
                                "executable": sys.executable,
                                "pythonpath": os.environ.get("PYTHONPATH", ""),
                                "started": time.time()}, durable=False)
    except (OSError, RulesError) as err:
        log(f"cannot listen in {folder}: {err}")
        return 1
    started = time.perf_counter()
    try:
        preload(backend)
    except Exception as err:
        log(f"cannot import the {backend} backend: {type(err).__name__}: {err}")
        listener.close()
        paths.socket.unlink(missing_ok=True)
        paths.info.unlink(missing_ok=True)
        return 1
    log(f"imported the {backend} backend in {time.perf_counter() - started:.1f}s")
    # Children would otherwise walk (and so copy-on-write) every object the
    # imports created at their first collection: 0.25 s per export, measured.
    gc.collect()
    gc.freeze()
    Server(paths, listener, fp, idle_timeout).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
