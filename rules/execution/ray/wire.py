"""What travels between the build and a node: the action, and the node's report on it.

Both are frozen values pickled by Ray. The action holds plain data only (the
job's wire form, parsed once on the node by job_from_wire), so a node never
depends on the client's Python objects; blobs travel beside it, by digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rules.core.files import ArtifactKind
from rules.core.hashing import sha256_json

ReportStatus = Literal["done", "refused", "lost"]


@dataclass(frozen=True)
class RemoteAction:
    """One action as a node receives it.

    `inputs` is every declared input (the data and weights files and the
    model-code closure), workspace-relative path -> sha256: exactly what the
    node materialises. `toolchain` is the action key's toolchain section,
    `tools` the versions of the other distributions the key names (the model
    code's third-party imports, a format's converter and runtime), and
    `rules_keras` the version in the key: a node whose own differ refuses the
    action. `out_name` is the artifact's file name (formats care about the
    suffix).
    """

    label: str
    job: Mapping[str, Any]
    inputs: tuple[tuple[str, str], ...]
    toolchain: Mapping[str, Any]
    tools: tuple[tuple[str, str], ...]
    rules_keras: str
    out_name: str
    env_id: str
    idle_timeout: float

    @property
    def backend(self) -> str:
        return str(self.job["backend"])


@dataclass(frozen=True)
class NodeInfo:
    """Which node ran an action: Ray's node id, its address and host name."""

    id: str
    ip: str
    hostname: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "ip": self.ip, "hostname": self.hostname}

    def short(self) -> str:
        return f"{self.ip} ({self.id[:8]})"


@dataclass(frozen=True)
class OutputFile:
    """One file of the artifact, with the digest the node computed; the client re-hashes it."""

    path: str
    sha256: str
    mode: int
    data: bytes


@dataclass(frozen=True)
class NodeReport:
    """What a node says about one action.

    "done": the job ran; `result` is its JobResult in wire form, with the
    outputs when it succeeded. "refused": the node's toolchain differs
    (`differences`, `node_toolchain`). "lost": the export process died (a
    crash in native code, out of memory) and the client should build locally.
    `root` is the node's workspace folder, so paths in a traceback can be
    shown as the user's own.
    """

    status: ReportStatus
    node: NodeInfo
    result: Mapping[str, Any] | None = None
    artifact_kind: ArtifactKind = "directory"
    files: tuple[OutputFile, ...] = ()
    dirs: tuple[str, ...] = ()
    root: str = ""
    differences: tuple[str, ...] = ()
    node_toolchain: Mapping[str, Any] | None = None
    reason: str = ""
    stdout: bytes = b""
    stderr: bytes = b""
    timings: Mapping[str, float] | None = None

    @property
    def output_bytes(self) -> int:
        return sum(len(f.data) for f in self.files)


def toolchain_differences(
    wanted: Mapping[str, Any], have: Mapping[str, Any], where: str = "on the node"
) -> list[str]:
    """One line per toolchain entry that differs: version, interpreter or numerics variable."""
    lines = []
    for name in sorted(set(wanted) | set(have)):
        if wanted.get(name) != have.get(name):
            lines.append(f"{name}: {_shown(wanted.get(name))} for the action, "
                         f"{_shown(have.get(name))} {where}")
    return lines


def fingerprint(toolchain: Mapping[str, Any]) -> str:
    """A short name for a toolchain section, to show two of them side by side."""
    return sha256_json(dict(toolchain))[:12]


def _shown(value: Any) -> str:
    return "unset" if value is None else repr(value)
