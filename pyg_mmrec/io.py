r"""Crash-safe file writing: write to a temporary file, then rename."""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    r"""Yields a temporary path next to :obj:`path`; on success it is renamed
    to :obj:`path` (atomic on POSIX), on failure it is removed, so readers
    never see a half-written file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.',
                               suffix='.tmp', dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_torch(obj: Any, path: str) -> None:
    r"""Atomically :func:`torch.save` :obj:`obj` to :obj:`path`."""
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
