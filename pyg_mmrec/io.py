r"""Crash-safe file writing: write to a temporary file, then rename."""
import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from pyg_mmrec.errors import OutputError


def current_umask() -> int:
    r"""The process's file-mode creation mask (reading it means setting
    it, so it is set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def existing_ancestor(folder: str) -> str:
    r"""The absolute path of :obj:`folder`, or of its nearest ancestor that
    exists (where creating :obj:`folder` would start)."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def folder_problem(folder: str) -> Optional[str]:
    r"""Why files cannot be written in :obj:`folder` (created if missing),
    in words, or :obj:`None` if they can. Creates nothing."""
    existing = existing_ancestor(folder)
    if not os.path.isdir(existing):
        return f'{existing} is a file, not a folder'
    if not os.access(existing, os.W_OK | os.X_OK):
        return f'{existing} is not writable'
    return None


# Failures of a write that come from where it writes, not from a bug.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                   errno.EPERM, errno.EFBIG, errno.EIO}


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    r"""Yields a temporary path next to :obj:`path`; on success it is renamed
    to :obj:`path` (atomic on POSIX), on failure it is removed, so readers
    never see a half-written file.
    """
    if os.path.isdir(path):
        raise OutputError(path, 'is a folder, not a file')
    directory = os.path.dirname(os.path.abspath(path))
    problem = folder_problem(directory)
    if problem:
        raise OutputError(path, f'cannot be written: {problem}')
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                                   suffix='.tmp', dir=directory)
    except OSError as e:
        raise OutputError(path, f'cannot be written ({e.strerror})') from None
    os.close(fd)
    # mkstemp makes the file private; give it the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            raise OutputError(path, f'cannot be written ({e.strerror})'
                              ) from None
        raise


#: Signals that end a run and are held back while its files are written.
STOP_SIGNALS = tuple(getattr(signal, name) for name in
                     ('SIGINT', 'SIGTERM', 'SIGHUP') if hasattr(signal, name))


@contextlib.contextmanager
def signal_handlers(handler: Callable[[int, Any], None],
                    signals: Optional[Iterable[int]] = None,
                    only_default: bool = False
                    ) -> Iterator[Dict[int, Any]]:
    r"""Installs :obj:`handler` for :obj:`signals` (default:
    :obj:`STOP_SIGNALS`) while the block runs and yields the handlers it
    replaced, which are put back at the end. Python handles signals only
    in the main thread, so elsewhere this installs nothing. A handler
    installed outside Python (which reads as :obj:`None` and cannot be put
    back) is left alone, and so is any non-default one if
    :obj:`only_default`."""
    previous: Dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS if signals is None else signals:
                current = signal.getsignal(sig)
                if current is not None and (not only_default
                                            or current == signal.SIG_DFL):
                    previous[sig] = signal.signal(sig, handler)
        yield previous
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    r"""Holds back :obj:`SIGINT`, :obj:`SIGTERM` and :obj:`SIGHUP` while the
    block runs and delivers them, to the handlers in place before, when it
    ends: files written together in the block (a checkpoint and the metrics
    that describe it) are then all replaced or none when a signal stops the
    process (see :func:`signal_handlers` for the handlers left alone)."""
    received: List[int] = []
    with signal_handlers(lambda num, frame: received.append(num)
                         ) as previous:
        yield
    for sig in dict.fromkeys(received):
        handler = previous[sig]
        if callable(handler):
            handler(sig, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(sig)


def save_torch(obj: Any, path: str) -> None:
    r"""Atomically :func:`torch.save` :obj:`obj` to :obj:`path`."""
    # Imported here: the CLI imports this module before torch, so that a
    # Ctrl-C during torch's import (~2 s) is still an orderly stop.
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_json(obj: Any, path: str) -> None:
    r"""Atomically write :obj:`obj` as indented JSON to :obj:`path`."""
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2)
            f.write('\n')


def copy_file(src: str, dst: str) -> None:
    r"""Atomically makes :obj:`dst` a copy of :obj:`src`: a hard link where
    the file system allows one (the writers here replace files by renaming,
    never in place, so the two names cannot diverge by mutation), else a
    byte copy."""
    with atomic_path(dst) as tmp:
        os.remove(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
