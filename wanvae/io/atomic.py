"""Atomic writes: a file appears whole under its name, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class AtomicFile:
    """A temporary file beside `path`; `commit()` renames it into place, `discard()` drops it.

    The temporary keeps the suffix, so writers that pick a format by extension (PyAV,
    torch.save) behave as for the real name. A crash leaves at most a hidden
    `.NAME.*.tmp.SUFFIX` file beside the target, never a partial target.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: already exists (pass --overwrite to replace it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".tmp{self.path.suffix}", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        # mkstemp (and some writers, e.g. safetensors) make the file private (0600); the
        # result should get the mode any new file gets here.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def remove_leftovers(folder: str | os.PathLike, suffix: str) -> list[Path]:
    """Delete the hidden temporaries that killed `AtomicFile` writes of `*SUFFIX` left in `folder`.

    Only for a folder one writer owns: another writer's temporary in flight looks the same.
    """
    folder = Path(folder)
    gone = [p for p in folder.glob(f".*.tmp{suffix}") if p.is_file()] if folder.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    f = AtomicFile(path, overwrite)
    try:
        yield f.tmp
        f.commit()
    finally:
        f.discard()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path` for a folder: build it aside, then swap it in whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # mkdtemp makes the folder private (0700), and writers such as safetensors their
        # files (0600): give them what a plain mkdir and open would, under the umask.
        umask = os.umask(0)
        os.umask(umask)
        for file in tmp.rglob("*"):
            os.chmod(file, (0o777 if file.is_dir() else 0o666) & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "replaced")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden folder inside `folder` to write several outputs into; when the block
    succeeds, move each into `folder` (replacing files of those names), else drop them all.

    For commands that write a set of files into a folder the user may keep other things
    in (so the folder cannot be swapped whole, as `atomic_dir` does): an interrupted run
    leaves none of the set, not some of it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".wanvae-stage.", dir=folder))
    try:
        yield stage
        umask = os.umask(0)
        os.umask(umask)
        for file in sorted(stage.iterdir()):
            os.chmod(file, 0o666 & ~umask)
            os.replace(file, folder / file.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
