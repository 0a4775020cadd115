"""A hostile Bazel HTTP cache on 127.0.0.1: a real process that lies in one chosen way.

It serves a local cache folder (`ac/<2 hex>/<key>`, `cas/<2 hex>/<sha256>`, as
rules_keras writes it) over Bazel's HTTP cache protocol, and misbehaves as
MODE says. Run as a script (`python hostile_server.py ROOT MODE`): it prints
its port on the first line of stdout. Tests use `running_hostile`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Each mode, and what it does. "honest" is the control: it must be restored from.
MODES = {
    "honest": "serves every entry as stored",
    "poison": "answers every AC GET with another key's valid, complete entry",
    "empty-200": "answers every GET with 200 and an empty body",
    "swapped digest": "an AC entry whose first output points at another blob",
    "renamed path": "an AC entry whose first output is renamed",
    "dropped file": "an AC entry missing its last output",
    "drip": "sends the body one byte every DRIP seconds",
    "oversized claim": "an AC entry claiming (in its record too) a 64 GiB blob",
    "long blob": "a blob served with 1 MiB more than its AC entry declares",
    "500": "answers everything with HTTP 500",
    "reset": "resets every connection without an answer",
    "truncated": "sends half of each blob, then hangs up",
    "garbage": "answers every AC GET with random bytes",
}
DRIP = float(os.environ.get("HOSTILE_DRIP_SECONDS", "0.5"))
HUGE = 64 << 30


def _decode(data: bytes) -> tuple[list[tuple[str, str, int, bool]], bytes]:
    from rules.cache import reapi

    message = reapi.decode_action_result(data)
    outputs = [(o.path, o.digest.hash, o.digest.size_bytes, o.is_executable)
               for o in message.output_files]
    return outputs, message.stdout_raw


def _encode(outputs: list[tuple[str, str, int, bool]], stdout: bytes) -> bytes:
    from rules.cache import reapi

    return reapi.encode_action_result(reapi.ActionResultMessage(
        tuple(reapi.OutputFile(p, reapi.Digest(h, s), x) for p, h, s, x in outputs), 0, stdout))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path
    mode: str

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self._send(201, b"", head=False)

    def _answer(self, head: bool) -> None:
        mode = self.mode
        if mode == "reset":
            # SO_LINGER 0: close() sends RST, as a crashing proxy does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if mode == "500":
            self._send(500, b"boom", head)
            return
        if mode == "empty-200":
            self._send(200, b"", head)
            return
        kind, _, key = self.path.rpartition("/")
        area = kind.rpartition("/")[2]
        path = self.root / area / key[:2] / key
        if area == "ac":
            if mode == "garbage":
                self._send(200, random.Random(key).randbytes(200), head)
                return
            if mode == "poison":
                others = sorted(p for p in (self.root / "ac").glob("*/*")
                                if p.name != key and not p.name.startswith("."))
                if not others:
                    self._send(404, b"", head)
                    return
                self._send(200, others[0].read_bytes(), head)
                return
            if not path.is_file():
                self._send(404, b"", head)
                return
            self._send(200, self._edit(path.read_bytes()), head)
            return
        if not path.is_file():
            self._send(404, b"", head)
            return
        data = path.read_bytes()
        if mode == "long blob":
            self._send(200, data + b"\0" * (1 << 20), head)
        elif mode == "truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
            self.close_connection = True
        else:
            self._send(200, data, head)

    def _edit(self, data: bytes) -> bytes:
        """The AC entry as this mode serves it."""
        mode = self.mode
        if mode not in ("swapped digest", "renamed path", "dropped file", "oversized claim"):
            return data
        outputs, stdout = _decode(data)
        if not outputs:
            return data
        path, sha, size, executable = outputs[0]
        if mode == "swapped digest":
            blobs = sorted(p.name for p in (self.root / "cas").glob("*/*") if p.name != sha
                           and not p.name.startswith("."))
            other = blobs[0]
            outputs[0] = (path, other, (self.root / "cas" / other[:2] / other).stat().st_size,
                          executable)
        elif mode == "renamed path":
            outputs[0] = (path + ".renamed", sha, size, executable)
        elif mode == "dropped file":
            outputs.pop()
        else:
            # A consistent forgery: the record claims the size too, so only the
            # size cap stands between it and a 64 GiB download.
            outputs[0] = (path, sha, HUGE, executable)
            record = json.loads(stdout)
            record["_files"][path][1] = HUGE
            stdout = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        return _encode(outputs, stdout)

    def _send(self, status: int, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head or not body:
            return
        if self.mode == "drip":
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(DRIP)
            return
        self.wfile.write(body)


def serve(root: Path, mode: str) -> None:
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}; one of {sorted(MODES)}")
    handler = type("Bound", (Handler,), {"root": root, "mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


@contextmanager
def running_hostile(root: Path, mode: str, log: Path | None = None) -> Iterator[str]:
    """Start the server on a copy-free view of `root` (a local cache folder); yields its URL.

    The process is always stopped, by its pid, when the block ends.
    """
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    stderr = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(root), mode],
        stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"hostile server did not start (mode {mode!r})")
        yield f"http://127.0.0.1:{port}/cache"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not None:
            stderr.close()  # type: ignore[union-attr]


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])
