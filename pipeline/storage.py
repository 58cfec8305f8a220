"""Where shards, the manifest and checkpoints live: a local path or a URI, through pyarrow filesystems.

A location is a plain path (``work/shards``, ``/mnt/nfs/shards``) or a URI that
``pyarrow.fs.FileSystem.from_uri`` understands (``file:///...``, ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``hdfs://...``). Locations are carried around as strings; the functions
here resolve them when they touch the store. Plain paths are made absolute, so a location
shipped to a Ray worker on another node means the same folder (a mount every node shares).

Atomic writes: on a local or mounted file system a file is written under a temp name and renamed;
on an object store (S3, GCS) an upload becomes visible whole when it completes, so it is written
in place. Either way a reader never sees half a file.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Callable

import pyarrow.fs as pafs

from semisep.pipeline.errors import SemisepError, StoreError


def has_scheme(location: str) -> bool:
    return "://" in location


def normalize(location: str) -> str:
    """Absolute local paths; URIs unchanged (``file://`` URIs stay URIs)."""
    return location if has_scheme(location) else os.path.abspath(location)


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a path or URI; an unusable URI names the setting's value."""
    if not has_scheme(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    try:
        return pafs.FileSystem.from_uri(location)
    except (ValueError, OSError, NotImplementedError) as exc:  # ArrowInvalid, ArrowNotImplementedError
        raise SemisepError(f"{location}: not a storage location this machine can open ({exc})") from None


def is_local(location: str) -> bool:
    """True for plain paths and ``file://`` URIs: locks and renames work there."""
    return isinstance(resolve(location)[0], pafs.LocalFileSystem)


def local_path(location: str) -> str:
    """The file system path of a local location (plain path or ``file://`` URI)."""
    fs, path = resolve(location)
    assert isinstance(fs, pafs.LocalFileSystem), location
    return path


def join(location: str, *parts: str) -> str:
    if has_scheme(location):
        return posixpath.join(location.rstrip("/"), *parts)
    return os.path.join(location, *parts)


def exists(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(location: str, name_filter: Callable[[str], bool]) -> list[str]:
    """Every file under ``location`` (recursively) whose base name passes the filter, as locations."""
    fs, root = resolve(location)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    found = [i.path for i in infos if i.type == pafs.FileType.File and name_filter(i.base_name)]
    return sorted(_relocate(location, root, p) for p in found)


def _relocate(location: str, root: str, path: str) -> str:
    """A path the filesystem returned, written in the style of ``location`` (URI or plain)."""
    if not has_scheme(location):
        return path
    rel = posixpath.relpath(path, root.rstrip("/") or "/")
    return join(location, rel) if rel != "." else location


def delete(location: str) -> None:
    fs, path = resolve(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def write_atomic(location: str, write: Callable[[pafs.FileSystem, str], None]) -> None:
    """Call ``write(fs, path)`` so that ``location`` appears whole or not at all.

    A failure of the store itself (full disk, no permission, a lost mount or bucket) is raised as
    ``StoreError`` naming ``location``, with nothing left behind.
    """
    fs, path = resolve(location)
    tmp = None
    try:
        fs.create_dir(posixpath.dirname(path) if has_scheme(location) else os.path.dirname(path), recursive=True)
        if not isinstance(fs, pafs.LocalFileSystem):
            write(fs, path)
            return
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        write(fs, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # pyarrow's IO errors are OSErrors too
        reason = exc.strerror or " ".join(str(exc).split())[:200]
        raise StoreError(location, f"cannot write ({reason})") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def mirror(location: str, local_root: str) -> tuple[int, int]:
    """Make ``local_root`` a copy of every file under ``location`` (a URI of a folder).

    New or changed files (size, mtime) are downloaded whole (temp name, then rename) and take the
    source's mtime, so a file that did not change keeps its size and mtime here too and the
    ingestion's incremental check skips it; local files the source no longer has are removed.
    Returns (downloaded, removed).
    """
    fs, root = resolve(location)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise SemisepError(f"{location}: no such folder")
    wanted = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File:
            wanted[posixpath.relpath(info.path, root.rstrip("/") or "/")] = info
    downloaded = 0
    for rel, info in sorted(wanted.items()):
        dest = os.path.join(local_root, *rel.split("/"))
        if not _same_file(dest, info):
            fetch(fs, info, dest)
            downloaded += 1
    removed = 0
    for folder, _, names in os.walk(local_root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.relpath(path, local_root).replace(os.sep, "/") not in wanted:
                os.unlink(path)
                removed += 1
    return downloaded, removed


def _same_file(path: str, info: pafs.FileInfo) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size == info.size and (info.mtime_ns is None or st.st_mtime_ns == info.mtime_ns)


def fetch(fs: pafs.FileSystem, info: pafs.FileInfo, dest: str) -> None:
    """Download one file to ``dest`` whole, with the source's mtime."""
    import shutil

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        if info.mtime_ns is not None:
            os.utime(tmp, ns=(info.mtime_ns, info.mtime_ns))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_local(path: str, local_root: str, location: str) -> None:
    """``path`` (inside ``local_root``, the mirror of ``location``) present on this node: an
    ingestion task on a node other than the one that scanned the corpus downloads its files."""
    rel = os.path.relpath(path, local_root).replace(os.sep, "/")
    fs, root = resolve(location)
    info = fs.get_file_info(posixpath.join(root.rstrip("/"), rel))
    if info.type == pafs.FileType.File and not _same_file(path, info):
        fetch(fs, info, path)


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    with fs.open_input_stream(path) as fh:
        return fh.read()
