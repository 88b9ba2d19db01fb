"""Writing files and folders atomically: a crash or a full disk never leaves half a file.

Everything a command writes for later reuse (manifests, predictions, checkpoints, results)
goes through here: it is written beside its destination under a temporary name and renamed
over it only when complete (``os.replace`` is atomic on one file system). A failed write
removes the temporary and raises ApaError naming the destination and the fix.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

from apa.errors import ApaError


def write_error(path: str | os.PathLike, error: OSError) -> ApaError:
    """The message of a failed write: which file, why, and what to do."""
    return ApaError(f"cannot write {path}: {error.strerror or error}; free disk space or choose another "
                    "output path, then run the same command again")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``with atomic_write(path) as f: ...`` writes ``path`` whole or not at all.

    ``mode`` is "w" (text, UTF-8) or "wb". The parent folder is created. The temporary file
    keeps the destination's suffix (``x.tmp.flac``), so writers that pick a format from the
    name still can.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """One line per item (a newline is added to each)."""
    with atomic_write(path) as f:
        for line in lines:
            f.write(line + "\n")


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_folder(final) as tmp: ...`` fills ``tmp``, then it replaces ``final``.

    Between removing an old ``final`` and renaming ``tmp`` a crash leaves only ``tmp``
    (a dot-folder beside it), never a half-written ``final``.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(path, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
