"""Bazel-disk-cache-style local store: sha256-named blobs in cas/, action results in ac/."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rules.cache.blob_io import BLOB_MODE, PARALLEL_COPY, copy_while_hashing, store_blob
from rules.cache.records import ActionResult, CacheCorrupt, CacheMiss
from rules.core.errors import CacheError
from rules.core.faults import pause_point
from rules.core.files import FileEntry, InvalidEntry, is_sha256, scan_tree
from rules.core.fsio import (
    TMP_PREFIX,
    DigestMismatch,
    discard,
    fsync_dir,
    read_chunks,
    verified,
    write_atomic,
)
from rules.core.fsio import reflink as fsio_reflink
from rules.core.hashing import sha256_file


@dataclass(frozen=True)
class CacheStats:
    """Counts and sizes of one cache root, from a single directory walk."""

    ac_entries: int
    cas_blobs: int
    total_bytes: int  # AC entries plus CAS blobs; in-flight tmp files are not counted
    tmp_files: int


@dataclass(frozen=True)
class StoredFile:
    """One file found under ac/ or cas/ by `walk_cache`."""

    area: Literal["ac", "cas"]
    name: str
    path: str
    size: int
    mtime_ns: int
    is_tmp: bool


def walk_cache(root: Path) -> Iterator[StoredFile]:
    """Yield every entry and tmp file under `root`; files that vanish mid-walk are skipped."""
    for area in ("ac", "cas"):
        try:
            shards = [e for e in os.scandir(root / area) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        for shard in shards:
            try:
                entries = list(os.scandir(shard.path))
            except FileNotFoundError:
                continue
            for entry in entries:
                is_tmp = entry.name.startswith(TMP_PREFIX)
                if not is_tmp and not is_sha256(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield StoredFile(
                        area, entry.name, entry.path, st.st_size, st.st_mtime_ns, is_tmp
                    )


class LocalCache:
    """A content-addressed cache directory shared by every build of this user.

    Readers take no locks: entries appear only by atomic rename and are never
    rewritten, an AC entry is written after all of its blobs, and every blob
    is re-hashed when it is restored. Every failure surfaces as CacheError so
    the caller can warn and build locally.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ac_path(self, key: str) -> Path:
        """Where the action result for `key` lives."""
        return self.root / "ac" / key[:2] / key

    def cas_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives."""
        return self.root / "cas" / sha256[:2] / sha256

    def lookup(self, key: str) -> ActionResult | None:
        """The stored result for `key` if it and all its blobs are present, else None.

        A bad entry (undecodable, naming another key, unsafe paths, a blob of
        the wrong size) is evicted and raises CacheCorrupt, so that the caller
        says so: a disk that flips bits deserves a warning, not a silent
        rebuild (issue 15 §4). A blob that is simply gone is a plain miss, since
        a concurrent gc may have taken it.
        """
        _check_key(key)
        path = self.ac_path(key)
        try:
            read = read_entry(path)
        except OSError as error:
            raise CacheError(f"cannot read cache entry {path}: {error}") from error
        if read is None:
            return None
        seen, data = read
        try:
            result = ActionResult.from_reapi(data)
            if result.key != key:
                raise InvalidEntry(f"it names action {result.key[:12] or '(none)'}")
        except InvalidEntry as error:
            evict_file(path, seen)
            raise CacheCorrupt(f"cache entry {path} is corrupt ({error}); it was removed") from None
        for entry in result.files:
            blob = self.cas_path(entry.sha256)
            try:
                size = os.stat(blob).st_size
            except FileNotFoundError:
                evict_file(path, seen)
                return None
            except OSError as error:
                raise CacheError(f"cannot stat cache blob {blob}: {error}") from error
            if size != entry.size:
                # A blob's name fixes its size, so this blob is wrong for everyone.
                evict_file(blob, None)
                evict_file(path, seen)
                raise CacheCorrupt(
                    f"cache blob {blob} has {size} bytes, not {entry.size}; it and the "
                    f"entry {key[:12]} were removed"
                )
        _touch(path)
        return result

    def evict(self, key: str) -> None:
        """Remove the AC entry of `key` (one that does not answer what it was asked)."""
        _check_key(key)
        evict_file(self.ac_path(key), None)

    def materialize(self, key: str, result: ActionResult, dest: Path) -> None:
        """Build the artifact described by `result` (the entry of `key`) at the new path `dest`.

        Files are reflinked where the filesystem can, copied otherwise, never
        hardlinked: a user editing an output must not edit the cache. Every
        blob is re-hashed; on a mismatch the blob and the AC entry are evicted,
        `dest` is removed and CacheCorrupt is raised. A blob removed by a
        concurrent gc gives CacheMiss. Either way the caller rebuilds.
        """
        _check_key(key)
        if os.path.lexists(dest):
            raise CacheError(f"cannot restore into {dest}: it already exists; pass a fresh path")
        reflink = [True]
        try:
            if result.kind == "file":
                self._restore_file(result.files[0], dest, reflink)
                return
            dest.mkdir(parents=True)
            for directory in result.dirs:
                (dest / directory).mkdir(parents=True, exist_ok=True)
            made = {""}
            for entry in result.files:
                parent = entry.path.rpartition("/")[0]
                if parent not in made:
                    (dest / parent).mkdir(parents=True, exist_ok=True)
                    made.add(parent)
                self._restore_file(entry, dest / entry.path, reflink)
        except (CacheCorrupt, CacheMiss):
            discard(dest)
            evict_file(self.ac_path(key), None)
            raise
        except OSError as error:
            discard(dest)
            raise CacheError(f"cannot restore {key[:12]} into {dest}: {error}") from error
        except BaseException:
            discard(dest)
            raise

    def store(
        self, key: str, artifact: Path, metadata: Mapping[str, Any], label: str = "",
        scanned: tuple[tuple[FileEntry, ...], tuple[str, ...]] | None = None,
    ) -> ActionResult:
        """Put `artifact` (a directory or a single file), built by `label`, in the cache at `key`.

        `scanned` is the artifact's scan_tree when the caller already hashed it
        (a build does, for its manifest): its bytes are then copied by the
        kernel, not read and hashed again. Blobs go first and the AC entry
        last, so a reader never sees an entry whose blobs are not all in place.
        Blob data is not fsynced: every restore re-hashes every blob, so one a
        power loss tore is found there, evicted and rebuilt with a warning,
        like a flipped bit (content addressing protects it, not durability;
        fsyncing a 1 GB SavedModel cost a cold build 1.6 s here). If a
        complete entry for `key` already exists it is kept as is and returned:
        entries are never rewritten.
        """
        _check_key(key)
        try:
            try:
                existing = self.lookup(key)
            except CacheCorrupt:
                existing = None  # evicted: this build replaces it
            if existing is not None:
                return existing
            files, dirs = scan_tree(artifact) if scanned is None else scanned
            single = stat.S_ISREG(os.lstat(artifact).st_mode)
            result = ActionResult(files, metadata, dirs, "file" if single else "directory",
                                  key, label)
            data = result.to_reapi()
            blobs: list[Path] = []
            for entry in files:
                blob = self.cas_path(entry.sha256)
                blobs.append(blob)
                if _present(blob, entry.size, entry.sha256):
                    continue
                _ensure_dir(blob.parent)
                store_blob(artifact if single else artifact / entry.path, blob, entry)
            pause_point("cache_store")
            ac = self.ac_path(key)
            _ensure_dir(ac.parent)
            write_atomic(ac, data, mode=0o644)
            fsync_dir(ac.parent)
            # Give the blobs the AC entry's timestamp: gc takes the AC entry
            # first on a tie, and a gc whose scan saw a blob's older mtime no
            # longer unlinks it. A gc that took a blob before this point (its
            # scan predates the entry) would strand the entry: that blob is
            # stored again, from the artifact still at hand.
            try:
                stamp = os.stat(ac).st_mtime_ns
            except FileNotFoundError:
                return result  # gc took the entry itself: nothing is stranded
            for entry, blob in zip(files, blobs, strict=True):
                try:
                    os.utime(blob, ns=(stamp, stamp))
                    continue
                except FileNotFoundError:
                    pass
                except OSError:
                    continue  # another user's blob in a shared cache: best effort, as before
                store_blob(artifact if single else artifact / entry.path, blob, entry)
                with contextlib.suppress(OSError):
                    os.utime(blob, ns=(stamp, stamp))
        except OSError as error:
            raise CacheError(f"cannot store {artifact} in cache {self.root}: {error}") from error
        return result

    def put_entry(self, key: str, data: bytes) -> ActionResult:
        """Add an AC entry fetched elsewhere (a remote cache) whose blobs are already in cas/.

        The entry is decoded first and every blob checked present with its
        size, so the entry can never point at something missing; blobs that
        arrived by download are made read-only like stored ones.
        """
        _check_key(key)
        try:
            result = ActionResult.from_reapi(data)
            if result.key != key:
                raise InvalidEntry(f"it names action {result.key[:12] or '(none)'}")
        except InvalidEntry as error:
            raise CacheError(f"entry {key[:12]} is invalid: {error}") from error
        try:
            for entry in result.files:
                blob = self.cas_path(entry.sha256)
                if os.stat(blob).st_size != entry.size:
                    raise CacheError(f"blob {entry.sha256[:12]} has the wrong size")
                if os.stat(blob).st_mode & 0o222:
                    os.chmod(blob, BLOB_MODE)
            ac = self.ac_path(key)
            _ensure_dir(ac.parent)
            write_atomic(ac, data, mode=0o644)
            fsync_dir(ac.parent)
        except FileNotFoundError as error:
            raise CacheMiss(f"blob for entry {key[:12]} is missing: {error}") from error
        except OSError as error:
            raise CacheError(f"cannot add entry {key[:12]} to {self.root}: {error}") from error
        return result

    def stats(self) -> CacheStats:
        """Count entries and bytes with one walk over the shard directories."""
        counts = {"ac": 0, "cas": 0}
        total = tmp = 0
        try:
            for item in walk_cache(self.root):
                if item.is_tmp:
                    tmp += 1
                    continue
                counts[item.area] += 1
                total += item.size
        except OSError as error:
            raise CacheError(f"cannot read cache {self.root}: {error}") from error
        return CacheStats(
            ac_entries=counts["ac"],
            cas_blobs=counts["cas"],
            total_bytes=total,
            tmp_files=tmp,
        )

    def _restore_file(self, entry: FileEntry, dest: Path, reflink: list[bool]) -> None:
        blob = self.cas_path(entry.sha256)
        with contextlib.ExitStack() as stack:
            try:
                source = stack.enter_context(open(blob, "rb"))
            except FileNotFoundError:
                raise CacheMiss(
                    f"blob {entry.sha256} of {entry.path} vanished (concurrent gc)"
                ) from None
            out = stack.enter_context(open(dest, "xb"))
            cloned = reflink[0] and fsio_reflink(out.fileno(), source.fileno())
            # The rest of this tree goes to the same filesystem: stop asking.
            reflink[0] = cloned
            # Hash the blob even after a clone: the clone shares its extents, and
            # this is the only place a bit flip in the cache is caught.
            try:
                if cloned or entry.size < PARALLEL_COPY:
                    for chunk in verified(read_chunks(source), entry.sha256, entry.size,
                                          str(blob)):
                        if not cloned:
                            out.write(chunk)
                else:
                    copy_while_hashing(source.fileno(), out.fileno(), entry, str(blob))
            except DigestMismatch as err:
                evict_file(blob, None)
                raise CacheCorrupt(
                    f"cache blob {blob} is corrupt ({err}); it was removed and the target "
                    "will be rebuilt"
                ) from None
            os.fchmod(out.fileno(), entry.mode)
        _touch(blob)


def read_entry(path: Path) -> tuple[os.stat_result, bytes] | None:
    """An AC entry's bytes and the stat of the file they came from (so that an eviction
    can tell it from a newer entry written since); None when there is none."""
    try:
        with open(path, "rb") as handle:
            return os.fstat(handle.fileno()), handle.read()
    except FileNotFoundError:
        return None


def _ensure_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    _ensure_dir(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return
    # A new directory's name must be durable before the entries inside it are.
    fsync_dir(directory.parent)


def _check_key(key: str) -> None:
    if not is_sha256(key):
        raise ValueError(f"cache keys are 64 lowercase hex characters. Received: key={key!r}")


def _present(blob: Path, size: int, sha256: str) -> bool:
    """True if `blob` already holds exactly these bytes; a damaged one is evicted.

    A same-size blob is re-hashed rather than trusted: a bit flipped on disk
    keeps the size, and reusing it would give a fresh AC entry a corrupt blob
    that every later restore (and every clone sharing the cache) then rejects.
    Re-hashing costs one read, and only when two entries share a blob.
    """
    try:
        st = os.stat(blob)
        if st.st_size == size and sha256_file(blob) == sha256:
            _touch(blob)
            return True
    except FileNotFoundError:
        return False
    evict_file(blob, st)
    return False


def _touch(path: Path) -> None:
    # The mtime is the LRU clock for gc. A read-only shared cache cannot be
    # touched, and that must not turn a hit into an error.
    with contextlib.suppress(OSError):
        os.utime(path)


def evict_file(path: Path, seen: os.stat_result | None) -> None:
    """Unlink a bad entry, unless it was replaced since we read it (then it is a new entry)."""
    with contextlib.suppress(OSError):
        if seen is not None:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
                return
        os.unlink(path)
