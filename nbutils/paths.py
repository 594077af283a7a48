"""Where the project lives on disk: configs, data and outputs.

The project root is found once: ``NBUTILS_ROOT`` if set, else the first folder
above the current directory (or above this package) that holds ``configs/`` and
``pyproject.toml``. Notebooks run from ``notebooks/`` and tests from the root
therefore see the same folders.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["project_root", "configs_dir", "resolve_path", "display_path", "atomic_write",
           "publish_folder",
           "atomic_write_text", "atomic_write_json", "json_default", "current_umask",
           "make_temp_dir", "replace_folder", "folder_built_beside", "remove_stale_temp_dirs", "clear_folder"]


def _looks_like_root(path: Path) -> bool:
    return (path / "configs").is_dir() and (path / "pyproject.toml").is_file()


def project_root() -> Path:
    """Return the course's root folder (the one holding ``configs/``)."""
    env = os.environ.get("NBUTILS_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if _looks_like_root(candidate):
                return candidate
    raise FileNotFoundError(
        "Cannot find the course folder (one with configs/ and pyproject.toml) above "
        f"{Path.cwd()}. Run from inside the course or set NBUTILS_ROOT=/path/to/course."
    )


def configs_dir() -> Path:
    """The ``configs/`` folder of the project."""
    return project_root() / "configs"


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """Resolve a relative path against the project root (absolute paths pass through)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (project_root() / p)


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the project root when it lies inside it, for printing.

    Printed outputs then read the same on every machine (``outputs/metrics/...``)
    instead of naming the folder the course happens to be in.
    """
    p = resolve_path(path)
    try:
        return p.resolve().relative_to(project_root().resolve()).as_posix()
    except ValueError:
        return str(p)


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(target: str | os.PathLike[str]) -> Path:
    """A hidden folder beside ``target`` to build it in, then rename into place.

    Its name carries this process's id, so :func:`remove_stale_temp_dirs` can tell one
    left by a killed process from one still being written; its mode follows the umask
    (``mkdtemp`` alone makes 0700 folders that other users cannot read).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp{os.getpid()}.", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def replace_folder(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the finished folder ``tmp`` to ``target``, replacing what was there.

    The old folder is first renamed aside, so ``target`` is never half written.
    """
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def publish_folder(tmp: str | os.PathLike[str], target: str | os.PathLike[str],
                   finished: Callable[[Path], bool] = Path.exists) -> bool:
    """Rename the built folder ``tmp`` to ``target``, unless another process building
    the same thing got there first: then ``tmp`` is removed and theirs kept.

    The rename itself decides the race (a check before it would leave a window). Returns
    whether ``tmp`` became ``target``; an error that is not a finished ``target`` is raised.
    """
    tmp, target = Path(tmp), Path(target)
    try:
        os.replace(tmp, target)
        return True
    except OSError:
        if not finished(target):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


@contextmanager
def folder_built_beside(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary place beside ``target``; on success it replaces ``target``.

    On an error nothing of it is left and ``target`` is untouched::

        with folder_built_beside(out) as tmp:
            write_files(tmp)
    """
    tmp = make_temp_dir(target)
    try:
        yield tmp
        replace_folder(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clear_folder(folder: str | os.PathLike[str], keep: tuple[str, ...] = ()) -> Path:
    """Empty ``folder`` (made if missing), keeping the entries named in ``keep``.

    A re-run of a training run starts its logs afresh this way: TensorBoard would
    otherwise show the old curves beside the new ones.
    """
    import shutil

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    for path in target.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temp_dirs(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the :func:`make_temp_dir` folders in ``folder`` whose process is gone.

    A process killed while building (SIGKILL, a crashed kernel) cannot clean up after
    itself; the next one does. Returns what was removed.
    """
    import re
    import shutil

    removed = []
    pattern = re.compile(r"^\..+\.tmp(\d+)\.[^.]+$")
    for path in Path(folder).glob(".*.tmp*"):
        match = pattern.match(path.name)
        if match and path.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` and move it into place only on success.

    A crash or an interrupt while writing leaves the previous file untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the result follows umask
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path."""
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy arrays and scalars and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically (numpy values and paths converted)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=json_default) + "\n")
