"""Atomic file writes: a reader never sees a half-written checkpoint, cache shard or output."""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it over `path` on success.

    The rename is atomic on POSIX, so a crash (even SIGKILL) leaves either the old file
    or the new one, never a truncated one. The temporary file is removed on error.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp (and some writers, e.g. safetensors) make 0600 files; outputs get the usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:  # flush file data before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    return file_hexdigest(path, hashlib.sha256(), chunk)


def file_hexdigest(path: str | os.PathLike, digest, chunk: int = 1 << 20) -> str:
    """`digest` (a fresh hashlib object) fed the file's bytes in chunks; its hexdigest."""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_yaml(text: str, where: str):
    """yaml.safe_load; a syntax error is one WpsSamError line naming the line and column (1-based) and the problem."""
    import yaml

    from .errors import WpsSamError

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(part for part in (exc.problem, exc.context and f"({exc.context})") if part)
        raise WpsSamError(f"{where}: invalid YAML{at}: {what or 'syntax error'}") from None
    except yaml.YAMLError as exc:
        raise WpsSamError(f"{where}: invalid YAML: {str(exc).splitlines()[0]}") from None


def write_marked_section(path: str | Path, text: str, begin: str, end: str) -> None:
    """Replace the part of a text file between the `begin` and `end` markers by `text` (which holds both markers),
    or append it when the markers are absent; atomic. Lets several report scripts share one markdown file."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write_text(path, new)
