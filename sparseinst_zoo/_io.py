"""Writing files without ever losing what is on disk.

Atomic writes (a temporary file in the target folder, then ``os.replace``): a crash or an error half-way never
leaves a truncated file where the user expects a checkpoint or a result, and never destroys the previous version
of that file. Run folders and output names that never collide with what exists (:func:`next_run_dir`,
:func:`free_path`), as Ultralytics names its runs; folders a failed run made are taken back only while empty
(:func:`make_dirs`, :func:`remove_empty_dirs`).

Results (overlays, label files, JSON) are published with ``replace=False``: the finished file gets its name by a
hard link, which fails when the name exists, so a file that another thread or process wrote under the same name
after this one chose it is never replaced either; the file then takes the next free name. Model files the caller
names (``save_pretrained``, ``export_onnx``) replace, as ``torch.save`` does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from .errors import SparseInstError

NextPath = Callable[[], str]
"""Names the next path to try when the chosen one was taken meanwhile (see :func:`publish`)."""

__all__ = [
    "new_file_mode",
    "atomic_save",
    "atomic_write",
    "atomic_write_json",
    "temporary_path",
    "publish",
    "NextPath",
    "staged_path",
    "StagedFile",
    "write_lines",
    "next_run_dir",
    "reserve_run_dir",
    "free_path",
    "free_names",
    "check_json_path",
    "write_new_json",
    "make_dirs",
    "remove_empty_dirs",
]


def _umask() -> int:
    """The process umask, read without changing it where the system says it (Linux: ``/proc/self/status``).

    ``os.umask`` can only be read by setting it: for that moment every file and folder another thread creates gets
    mode 0o666 / 0o777, so it is read that way only once, at import, where the system does not say it.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return _UMASK_AT_IMPORT


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask); temporary files are made 0o600, so a published
    file gets this one."""
    return 0o666 & ~_umask()


def _umask_by_setting_it() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_by_setting_it()


def temporary_path(path: str | os.PathLike[str]) -> str:
    """Create (and create the folder of) an empty temporary file beside ``path``, same extension; returns its path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], dir=directory, prefix=".tmp-")
    os.close(fd)
    return tmp


def publish(
    tmp: str,
    path: str | os.PathLike[str],
    *,
    replace: bool = True,
    next_path: NextPath | None = None,
    companions: Sequence[str] = (),
) -> str:
    """Give ``tmp`` the usual permissions (0666 minus umask) and move it to ``path``; returns the path it went to.

    Args:
        tmp: the finished file, in ``path``'s folder.
        path: where it goes.
        replace: replace a file at ``path`` (atomically). ``False``: never replace one, also one another process
            created after ``path`` was chosen; the file goes to ``next_path()`` instead, tried in turn.
        next_path: the next name to try (default: the first free ``<stem>_2``, ``_3``, ... of ``path``).
        companions: the files ``tmp``'s stem + these suffixes (e.g. an OpenVINO ``.bin``), which move first, to
            ``path``'s stem + the suffix; with ``replace=False`` all of them must be free.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> [os.path.basename(publish(temporary_path(f"{folder}/a.txt"), f"{folder}/a.txt", replace=False))
        ...  for _ in range(2)]
        ['a.txt', 'a_2.txt']
    """
    path = os.fspath(path)
    os.chmod(tmp, new_file_mode())
    if replace:
        for source, target in _moves(tmp, path, companions):
            os.replace(source, target)
        return path
    if next_path is None:
        folder, name = os.path.split(path)
        stem, suffix = os.path.splitext(name)
        next_path = free_names(folder, stem, suffix, set(), companions)
    while True:
        try:
            _move_new(_moves(tmp, path, companions))
            return path
        except FileExistsError:
            taken, path = path, next_path()
            if os.path.abspath(path) == os.path.abspath(taken):
                raise


def _moves(tmp: str, path: str, companions: Sequence[str]) -> list[tuple[str, str]]:
    """The (source, target) renames that publish ``tmp`` at ``path``: its existing companions first, then itself."""
    tmp_stem, stem = os.path.splitext(tmp)[0], os.path.splitext(path)[0]
    moves = [(tmp_stem + suffix, stem + suffix) for suffix in companions if os.path.exists(tmp_stem + suffix)]
    return [*moves, (tmp, path)]


def _move_new(moves: list[tuple[str, str]]) -> None:
    """Do ``moves`` without replacing any target; on a taken one, undo those done and raise FileExistsError."""
    done: list[tuple[str, str]] = []
    try:
        for source, target in moves:
            _link_new(source, target)
            done.append((source, target))
    except FileExistsError:
        for source, target in reversed(done):
            os.replace(target, source)  # the file this call just created: ours to take back
        raise


def _link_new(source: str, target: str) -> None:
    """Rename ``source`` to ``target``, raising FileExistsError if ``target`` exists, with no moment in which a file
    created there by someone else could be replaced (``os.rename`` replaces it on POSIX)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: claim the name exclusively, then move onto the claim
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(source, target)
        return
    os.unlink(source)


def atomic_save(
    path: str | os.PathLike[str],
    save: Callable[[str], Any],
    *,
    replace: bool = True,
    next_path: NextPath | None = None,
) -> str:
    """Call ``save(tmp_path)`` (e.g. ``torch.save``, ``safetensors.torch.save_file``) and move the file to ``path``
    (``replace``, ``next_path``: see :func:`publish`); returns the path written."""
    tmp = temporary_path(path)
    try:
        save(tmp)
        return publish(tmp, path, replace=replace, next_path=next_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class StagedFile:
    """A file being written at :attr:`path` (in a temporary folder) that :func:`staged_path` moves to
    :attr:`target`; with ``replace=False`` :attr:`target` is where it went once the block is over."""

    def __init__(self, path: str, target: str) -> None:
        self.path = path
        self.target = target


@contextlib.contextmanager
def staged_path(
    path: str | os.PathLike[str],
    companions: Sequence[str] = (),
    *,
    replace: bool = True,
    next_path: NextPath | None = None,
) -> Iterator[StagedFile]:
    """A file with ``path``'s name in a temporary folder beside it, to write (and check) at ``.path``; when the
    block succeeds it moves to ``path`` (:func:`publish`: ``replace``, ``next_path``), its ``companions`` (same stem,
    these suffixes, e.g. an OpenVINO ``.bin``) first; when it fails nothing is moved and the folder is removed.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "model.xml"
        >>> with staged_path(target, (".bin",)) as staged:
        ...     xml = pathlib.Path(staged.path)
        ...     _ = xml.write_text("<net/>"), xml.with_suffix(".bin").touch()
        >>> sorted(p.name for p in target.parent.iterdir()), staged.target == str(target)
        (['model.bin', 'model.xml'], True)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=".tmp-", dir=directory)
    try:
        staged = StagedFile(os.path.join(folder, os.path.basename(path)), path)
        yield staged
        staged.target = publish(staged.path, path, replace=replace, next_path=next_path, companions=companions)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[Any]], None],
    mode: str = "wb",
    *,
    replace: bool = True,
    next_path: NextPath | None = None,
) -> str:
    """Call ``write(handle)`` on a temporary file and move it to ``path`` only if it succeeded (``replace``,
    ``next_path``: see :func:`publish`); returns the path written."""

    def save(tmp: str) -> None:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            write(handle)

    return atomic_save(path, save, replace=replace, next_path=next_path)


def atomic_write_json(
    path: str | os.PathLike[str],
    data: Any,
    indent: int | None = 2,
    *,
    replace: bool = True,
    next_path: NextPath | None = None,
    **json_kwargs: Any,
) -> str:
    """Write ``data`` as JSON (plus a final newline) to ``path`` atomically; returns the path written."""

    def write(handle: IO[str]) -> None:
        json.dump(data, handle, indent=indent, **json_kwargs)
        handle.write("\n")

    return atomic_write(path, write, mode="w", replace=replace, next_path=next_path)


def write_lines(
    path: str | os.PathLike[str], lines: Sequence[str], *, replace: bool = True, next_path: NextPath | None = None
) -> str:
    """Write ``lines``, each plus a newline, to a text file atomically; returns the path written."""

    def write(handle: IO[str]) -> None:
        handle.writelines(f"{line}\n" for line in lines)

    return atomic_write(path, write, mode="w", replace=replace, next_path=next_path)


def next_run_dir(
    path: str | os.PathLike[str], exist_ok: bool = False, in_use: Callable[[str], bool] = os.path.exists
) -> str:
    """``path`` if it is not ``in_use`` (or ``exist_ok``), else the first free ``<path>2``, ``<path>3``, ...

    Args:
        path: the folder asked for.
        exist_ok: use ``path`` even when it is in use.
        in_use: whether a folder is taken (default: it exists; training asks whether it holds a run).

    Example:
        >>> import tempfile
        >>> base = tempfile.mkdtemp()
        >>> next_run_dir(base) == base + "2", next_run_dir(base, exist_ok=True) == base
        (True, True)
    """
    path = os.fspath(path).rstrip("/\\") or os.fspath(path)
    if exist_ok or not in_use(path):
        return path
    n = 2
    while in_use(f"{path}{n}"):
        n += 1
    return f"{path}{n}"


def reserve_run_dir(path: str | os.PathLike[str], exist_ok: bool = False) -> tuple[str, list[str]]:
    """Create :func:`next_run_dir`'s folder; returns it and the folders created (as :func:`make_dirs`).

    The folder is made with ``os.mkdir``, which fails if it exists: when another thread or process took the name
    between the check and the creation, the next free one is used, so two runs started at once never share a folder.

    Example:
        >>> import tempfile, os
        >>> base = os.path.join(tempfile.mkdtemp(), "predict")
        >>> [os.path.basename(reserve_run_dir(base)[0]) for _ in range(2)]
        ['predict', 'predict2']
    """
    chosen = next_run_dir(path, exist_ok)
    if exist_ok:
        return chosen, make_dirs(chosen)
    parents = make_dirs(os.path.dirname(os.path.abspath(chosen)))
    while True:
        try:
            os.mkdir(chosen)
            return chosen, [*parents, os.path.abspath(chosen)]
        except FileExistsError:
            chosen = next_run_dir(path)  # taken meanwhile: it exists now, so this is a later name


def free_path(folder: str, stem: str, suffix: str, taken: set[str], companions: Sequence[str] = ()) -> str:
    """``folder/stem+suffix``, or with the first free ``_2``, ``_3`` suffix if that exists or is in ``taken``.

    The chosen path is added to ``taken`` (real paths), so one run never hands out a name twice. A name is free only
    if its ``companions`` (the same name with these suffixes, e.g. an OpenVINO model's ``.bin``) do not exist either.

    Example:
        >>> import tempfile, os
        >>> folder, taken = tempfile.mkdtemp(), set()
        >>> [os.path.basename(free_path(folder, "a", ".png", taken)) for _ in range(2)]
        ['a.png', 'a_2.png']
    """

    def in_use(base: str) -> bool:
        return any(os.path.exists(base + s) for s in (suffix, *companions)) or os.path.realpath(base + suffix) in taken

    base, n = os.path.join(folder, stem), 2
    while in_use(base):
        base, n = os.path.join(folder, f"{stem}_{n}"), n + 1
    candidate = base + suffix
    taken.add(os.path.realpath(candidate))
    return candidate


def free_names(folder: str, stem: str, suffix: str, taken: set[str], companions: Sequence[str] = ()) -> NextPath:
    """:func:`free_path` of these arguments as a call without any: the first call chooses a name, later calls the
    names to publish at instead when someone else created it first (``next_path`` of :func:`publish`).

    Example:
        >>> import tempfile, os
        >>> names = free_names(tempfile.mkdtemp(), "a", ".png", set())
        >>> os.path.basename(names()), os.path.basename(names())
        ('a.png', 'a_2.png')
    """
    return functools.partial(free_path, folder, stem, suffix, taken, companions)


def check_json_path(out: str | os.PathLike[str], what: str = "the results", example: str = "result.json") -> str:
    """``out`` if it can name a new ``.json`` file; a one-line SparseInstError saying what to give otherwise.

    Example:
        >>> check_json_path("metrics.json", "the metrics", "metrics.json")
        'metrics.json'
    """
    path = os.fspath(out)
    if os.path.isdir(path):
        raise SparseInstError(f"{path!r} is a folder; name a file for {what}, e.g. {example}")
    if os.path.splitext(path)[1].lower() != ".json":
        raise SparseInstError(f"{what} are written as JSON: name a .json file (e.g. {example}), not {path!r}")
    return path


def write_new_json(out: str | os.PathLike[str], data: Any, **json_kwargs: Any) -> str:
    """Write ``data`` as JSON (atomically) to ``out``, or to the next free ``<stem>_2.json`` ... when it exists.

    An existing file (an earlier run's result, an input just read) is never replaced. Returns the path written.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> [os.path.basename(write_new_json(os.path.join(folder, "r.json"), {"a": 1})) for _ in range(2)]
        ['r.json', 'r_2.json']
    """
    return atomic_write_json(out, data, replace=False, **json_kwargs)


def make_dirs(path: str | os.PathLike[str]) -> list[str]:
    """Create the folder ``path`` and its missing parents; returns the folders this call created, outermost first.

    Example:
        >>> import tempfile, os
        >>> base = tempfile.mkdtemp()
        >>> [os.path.relpath(p, base) for p in make_dirs(os.path.join(base, "runs", "predict"))]
        ['runs', 'runs/predict']
    """
    missing, head = [], os.path.abspath(path)
    while not os.path.exists(head):
        missing.append(head)
        head = os.path.dirname(head)
    if not os.path.isdir(head):
        raise SparseInstError(f"{head} is a file where a folder is needed; choose another folder")
    os.makedirs(path, exist_ok=True)
    return missing[::-1]


def remove_empty_dirs(created: list[str]) -> None:
    """Take back the folders :func:`make_dirs` created, innermost first, as long as each is empty.

    ``os.rmdir`` refuses a folder that holds anything, so whatever was written there (by this run, another process
    or the user) is never removed.
    """
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            return
