"""A build session: decides what is up to date, runs jobs in workers and publishes results.

Independent of doit: rules.workspace only turns these methods into task dicts.
Correctness never depends on doit's DB: up-to-date means the manifest beside the
artifact records the current action key and the artifact's files are intact.
"""

from __future__ import annotations

import atexit
import dataclasses
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rules import config, job_logs
from rules.analysis import action_key, reasons
from rules.analysis.action_key import ActionKey, InputMissing
from rules.analysis.graph import Action, BuildGraph, Policy, analyse
from rules.analysis.imports import ImportScanner
from rules.core.backends import BACKENDS
from rules.core.digests import DigestCache
from rules.core.errors import ExportError
from rules.core.files import scan_tree
from rules.core.formats import EXPORT_FORMATS, expected
from rules.core.fsio import discard
from rules.core.hashing import sha256_bytes
from rules.core.toolchain import Toolchain, detect
from rules.execution import output_digests
from rules.execution.protocol import JobRequest, JobResult
from rules.loading.build_files import load_workspace
from rules.loading.labels import Label
from rules.loading.targets import ExportTarget
from rules.publishing import Publisher, serving_name
from rules.storage import manifest as manifest_io
from rules.storage.manifest import Manifest
from rules.storage.publish import remove, staging_dir

if TYPE_CHECKING:
    from rules.cache.validate import Question
    from rules.cache_use import CacheUse
    from rules.execution.pool import WorkerPool
    from rules.execution.ray.executor import RayExecutor

STATE_DIR = ".rules_keras"
# The reason a target is built when its cache entry was found wrong (issue 15 §7).
CORRUPT_REASON = "cache entry corrupt; rebuilt"
Status = Literal["built", "restored", "up to date"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a target finished: built, restored (from a cache) or up to date."""

    label: str
    status: Status
    reasons: tuple[str, ...] = ()
    forced: bool = False
    # Said after the label on the target's console line: "from the local cache".
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Check:
    """What the up-to-date check found for one target; build() acts on it, deciding nothing twice.

    `key` is None when an input is missing or unreadable; `current` is the
    published manifest when it records this key and the artifact is intact;
    `reasons` say why the target must be built (empty when it is up to date).
    """

    key: ActionKey | None
    current: Manifest | None
    reasons: tuple[str, ...]
    serving_stale: bool = False

    @property
    def up_to_date(self) -> bool:
        return self.current is not None and not self.serving_stale


class BuildSession:
    """Everything one `doit` invocation knows about the workspace."""

    def __init__(self, root: Path, verbose: bool = False) -> None:
        self.root = root
        self.verbose = verbose  # doit -v 2: per-target details and each job's log
        self.state = root / STATE_DIR
        self.state.mkdir(exist_ok=True)
        self.settings = config.load(root)
        self.digests = DigestCache(self.state / "digests.json")
        self.publisher = Publisher(self.settings, self.state, self.digests, self._log)
        self.scanner = ImportScanner(root, self.digests, self.state / "imports.json")
        self._toolchain: Toolchain | None = None
        policy = Policy(strict_verification=self.settings.strict_verification,
                        warn_undeclared_inputs=self.settings.undeclared_inputs == "warn")
        self.graph: BuildGraph = analyse(
            root, load_workspace(root, self.state / "build_code.marshal"), policy)
        self.actions: dict[Label, Action] = {a.label: a for a in self.graph.actions}
        self.selected: frozenset[str] | None = None  # what doit's command line asks for; None: all
        # Made on first use: a no-op needs none of them, and their imports cost it 40 ms.
        self._caches: CacheUse | None = None
        self._pool: WorkerPool | None = None
        self._remote: RayExecutor | None = None
        self._machinery = threading.Lock()
        # The Check of is_up_to_date(), kept for the build() of the same target.
        self._checks: dict[Label, Check] = {}
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    @property
    def caches(self) -> CacheUse:
        with self._machinery:
            if self._caches is None:
                from rules.cache_use import CacheUse

                self._caches = CacheUse(self.settings, self.state, self._warn, self._log)
            return self._caches

    @property
    def pool(self) -> WorkerPool:
        with self._machinery:
            if self._pool is None:
                from rules.execution.pool import ServerConfig, WorkerPool

                server = ServerConfig(self.settings.server_idle_timeout,
                                      lambda: self.toolchain.to_json(),
                                      self._cold) if self.settings.server else None
                self._pool = WorkerPool(self.root, on_start=self._worker_started, server=server,
                                        on_notice=self._notice,
                                        hidden_env=self.settings.header_vars,
                                        log_dir=self.state / "workers")
            return self._pool

    def _cold(self, backend: str) -> int:
        chosen = [a for a in self.graph.actions if a.backend == backend
                  and (self.selected is None or str(a.label) in self.selected)]
        return manifest_io.cold(map(self.artifact, chosen), self.toolchain.to_json())

    @property
    def remote(self) -> RayExecutor | None:
        """With executor = "ray", the cluster that actions go to first (ray itself is imported
        only when the first one does); None from its run() means "build locally"."""
        if self.settings.ray is None:
            return None
        with self._machinery:
            if self._remote is None:
                from rules.execution.ray.executor import RayExecutor

                self._remote = RayExecutor(self.root, self.state, self.settings.ray,
                                           self._notice, self._log)
            return self._remote

    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            # Kept beside the cache when there is one: the module->distribution
            # map belongs to the Python environment, not the workspace, so a
            # fresh clone does not pay the 0.2 s to rebuild it.
            where = self.settings.cache_dir or self.state
            env_id = sha256_bytes(sys.executable.encode())[:16]
            self._toolchain = detect(where / "toolchains" / f"{env_id}.json")
        return self._toolchain

    def artifact(self, action: Action) -> Path:
        return self.root / action.output

    def key(self, action: Action) -> ActionKey:
        return action_key.compute(action, self.root, self.digests, self.scanner, self.toolchain)

    def question(self, action: Action, key: ActionKey) -> Question:
        """What a cache entry must answer to be restored as this action's artifact."""
        from rules.cache.validate import Question

        return Question(key.digest, str(action.label), expected(action.job))

    # -- up to date -----------------------------------------------------------

    def is_up_to_date(self, label: Label) -> bool:
        """doit's up-to-date callback: check the target, and keep the Check for build()."""
        check = self.check(label)
        with self._lock:
            self._checks[label] = check
        return check.up_to_date

    def reasons(self, label: Label) -> tuple[str, ...]:
        """Why the last up-to-date check of `label` said it must be built (for doit info)."""
        with self._lock:
            check = self._checks.get(label)
        return check.reasons if check is not None else ()

    def check(self, label: Label) -> Check:
        """Is the published artifact the one the current inputs make, intact and served?"""
        action = self.actions[label]
        try:
            key = self.key(action)
        except InputMissing as missing:
            return Check(None, None, (f"input {missing} is missing",))
        except OSError as err:
            # Unreadable inputs: build() reports it against the label.
            return Check(None, None, (f"cannot read an input: {err}",))
        dest = self.artifact(action)
        previous = manifest_io.read(dest)
        current = self._current(dest, previous, key)
        if current is not None:
            if self.publisher.served(action, current):
                return Check(key, current, ())
            name, root = serving_name(action), self.settings.serving_root
            return Check(key, current, (f"TF Serving model {name!r} in {root} lacks this version",),
                         serving_stale=True)
        if previous is not None and previous.key == key.digest:
            return Check(key, None, (f"{action.output} is missing or was modified",))
        return Check(key, None, tuple(reasons.explain(previous.inputs if previous else None,
                                                         key.inputs)))

    def _current(self, dest: Path, manifest: Manifest | None, key: ActionKey) -> Manifest | None:
        """`manifest` if it records `key` and every file it lists is intact, else None."""
        if manifest is None or manifest.key != key.digest:
            return None
        return manifest if manifest_io.intact(dest, manifest, self.digests) else None

    def build(self, label: Label, forced: bool = False) -> Outcome:
        """Restore or build one action and publish it; raises RulesError on failure.

        The action lock (shared by every workspace using the cache) makes a
        second builder of the same key wait, then find the result published
        or cached instead of exporting it again. With no Check from doit's
        up-to-date callback (`doit -a`), the target is rebuilt from scratch:
        nothing is taken from artifacts/ or a cache; `forced` (doit -a) says the same.
        """
        action = self.actions[label]
        with self._lock:
            check = self._checks.pop(label, None)
        # doit runs a target whose check said up to date only when told to.
        forced = forced or check is None or check.up_to_date
        # doit ran the up-to-date check just before this action, after its
        # dependencies finished: a key it computed is current.
        key = check.key if check is not None else None
        if key is None:
            try:
                key = self.key(action)
            except InputMissing as err:
                raise ExportError(str(label), f"input {err} is missing") from err
            except OSError as err:
                raise ExportError(str(label), f"cannot read an input: {err}") from err
        reasons = ("forced (doit -a)",) if forced else check.reasons if check else ()
        dest = self.artifact(action)
        with self.caches.action_lock(label, key.digest):
            if not forced and self._current(dest, manifest_io.read(dest), key) is not None:
                assert check is not None
                self._log(label, "up to date; publishing it to TF Serving" if check.serving_stale
                          else "up to date (built by a concurrent build)")
                self.publisher.serve(action, dest)
                return Outcome(str(label), "up to date")
            staging = staging_dir(dest)
            try:
                outcome = None
                if not forced:
                    outcome, reasons = self._restore(action, key, dest, staging, reasons)
                if outcome is None:
                    outcome = self._export(action, key, dest, staging, reasons, forced)
            finally:
                discard(staging)
            # Restored or built alike: a server must get what artifacts/ has.
            self.publisher.serve(action, dest)
        return outcome

    def _restore(
        self, action: Action, key: ActionKey, dest: Path, staging: Path, reasons: tuple[str, ...]
    ) -> tuple[Outcome | None, tuple[str, ...]]:
        """The restored outcome, or None and the reasons to build (which say so when the
        cache held a corrupt entry: "no previous build" would hide it)."""
        from rules.cache.tiers import Corrupt

        cache = self.caches.ready()
        if cache is None:
            return None, reasons
        question = self.question(action, key)
        corrupt = (*(r for r in reasons if r != "no previous build"), CORRUPT_REASON)
        hit = cache.fetch(question)
        if hit is None or isinstance(hit, Corrupt):
            return None, reasons if hit is None else corrupt
        staged = staging / dest.name
        restored = cache.restore(question, hit, staged)
        if restored is not True:
            return None, corrupt if isinstance(restored, Corrupt) else reasons
        record = hit.result.metadata.get("record", {})
        self.publisher.publish(action, key, dest, staged, hit.result.files, hit.result.dirs, record,
                      "restored")
        self._log(action.label, f"restored {action.output} from the {hit.source} cache")
        for line in record.get("warnings", ()):  # what its build warned about still holds
            self._warn(str(line))
        return Outcome(str(action.label), "restored", reasons,
                       detail=f"from the {hit.source} cache"), reasons

    def _export(
        self, action: Action, key: ActionKey, dest: Path, staging: Path,
        reasons: tuple[str, ...], forced: bool,
    ) -> Outcome:
        label = action.label
        missing = self.toolchain.missing_for(action.backend)
        if missing:
            raise ExportError(
                str(label),
                f"backend {action.backend!r} needs {', '.join(missing)}, which is not "
                f"installed; {BACKENDS[action.backend].install}",
            )
        target = action.target
        fmt = EXPORT_FORMATS[target.format] if isinstance(target, ExportTarget) else None
        if fmt is not None and fmt.missing(action.backend):
            raise ExportError(str(label), fmt.install_hint(action.backend))
        self._log(label, "building: " + "; ".join(reasons))
        staged = staging / dest.name
        log = job_logs.log_path(self.state, label)
        job_logs.begin(log, label, reasons)
        result = self._run(action, key, staged, log)
        if not result.ok:
            excerpt = job_logs.failure_excerpt(log, self.root)
            raise ExportError(str(label), result.message,
                              "\n".join(x for x in (result.details.rstrip(), excerpt) if x))
        if self.verbose:
            print(job_logs.read(log), end="", file=sys.stdout, flush=True)
        try:
            unchanged = self.key(action).digest == key.digest
        except InputMissing:
            unchanged = False
        files, dirs = scan_tree(staged, output_digests.known(result.hashed))
        if not unchanged:
            # The artifact may mix old and new inputs: publish it so the user
            # sees the result, but keep it out of the cache, and record the old
            # key so the next run rebuilds (see Bazel #3360).
            self._warn(f"{label}: inputs changed during the build; not cached, "
                       "will rebuild next time")
        elif (cache := self.caches.ready()) is not None and self.caches.writable:
            metadata = {"kind": action.kind, "record": dict(result.record)}
            cache.store(key.digest, staged, metadata, str(label), (files, dirs))
        self.publisher.publish(action, key, dest, staged, files, dirs, result.record, "built")
        seconds = result.record.get("seconds")
        built = "built (forced)" if forced else "built"
        self._log(label, f"{built} {action.output} in {seconds:.2f}s" if seconds else built)
        for line in result.warnings:  # each names the label
            self._warn(line)
        return Outcome(str(label), "built", reasons, forced, "(forced)" if forced else "")

    def _run(self, action: Action, key: ActionKey, staged: Path, log: Path) -> JobResult:
        """Run the job on the cluster when one is configured, else (or if it declines) here.

        The record says where the artifact was built; what the job printed is in `log`.
        """
        declared = action_key.declared_inputs(action, key, ignored=(STATE_DIR,))
        request = JobRequest(action.job, str(staged), declared, str(log))
        if self.remote is not None:
            result = self.remote.run(request, key.inputs, action.resources)
            if result is not None:
                return result
        result = self.pool.run(request)
        where = {"executor": "local", "node": {"hostname": socket.gethostname()}}
        return dataclasses.replace(result, record={**result.record, **where})

    def clean(self, label: Label) -> None:
        remove(self.artifact(self.actions[label]))

    def save_state(self) -> None:
        self.digests.save()
        self.scanner.save()

    def close(self) -> None:
        """Save the state files and stop the workers; runs once, at exit at the latest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.save_state()
        with self._machinery:
            made = (self._remote, self._pool, self._caches)
        for part in made:
            if part is not None:
                part.close()

    def _warn(self, message: str) -> None:
        print(f"rules_keras: warning: {message}", file=sys.stderr, flush=True)

    def _notice(self, message: str) -> None:
        print(f"rules_keras: {message}", file=sys.stderr, flush=True)

    def _worker_started(self, backend: str) -> None:
        print(f"rules_keras: starting a {backend} worker", file=sys.stderr, flush=True)

    def _log(self, label: Label | str, message: str) -> None:
        """A detail of one target's build: on the console with doit -v 2 only."""
        if not self.verbose:
            return
        # file=sys.stdout, not print's default: under `doit -n` another thread
        # swaps sys.stdout for each action, and CPython 3.11's print() holds
        # only a borrowed reference to it, so it could write through a freed
        # stream (SIGSEGV). The argument keeps this one alive for the call.
        print(f"  {label}: {message}", file=sys.stdout, flush=True)
