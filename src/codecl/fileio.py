"""Atomic, crash-safe file writing and folder manifests.

Every artifact is written to a temporary name in the destination folder, fsync'd and
`os.replace`d, so a reader sees either the old file or the new one, never a torn write.
A folder of files is sealed by a `manifest.json` (sha256 per file) written last.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from codecl.errors import CheckpointError, CodeclError

MANIFEST = "manifest.json"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` then atomically move the result to `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CodeclError(f"cannot write {path}: {exc.strerror} — choose a writable output folder") from exc
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, permissions, quota: name the file, keep the old version
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise CodeclError(f"cannot write {path}: {exc.strerror or exc}; the previous version (if any) is intact") from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, _write)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the file is corrupted or truncated") from exc


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Seal `folder`: record the sha256 of every file in it (written last)."""
    folder = Path(folder)
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    return write_json(folder / MANIFEST, {"files": files, **(extra or {})})


def verify_manifest(folder: str | os.PathLike) -> dict:
    """Check every file listed in the manifest; raise CheckpointError naming the bad file."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST}; the folder was not completely written — delete it to retrain that stage")
    manifest = read_json(manifest_path)
    for name, digest in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in {MANIFEST} but missing")
        if sha256_file(file) != digest:
            raise CheckpointError(f"{file}: sha256 differs from {MANIFEST}; the file is corrupted or truncated")
    return manifest
