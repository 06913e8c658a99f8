r"""Helpers shared by the benchmark scripts (run as ``python
benchmarks/<script>.py``, which puts this folder on the import path).

The option validators are for ``argparse``'s ``type=``: a bad value is
reported as one ``error:`` line with exit status 2 when the command line is
parsed, before any data is loaded or anything is timed.
"""
import argparse
import contextlib
import math
import os.path as osp
import resource
import tempfile
from typing import Callable, Dict, Iterable, Optional, Union

import torch
from torch import Tensor

from pyg_mmrec.errors import ConfigError, OutputError
from pyg_mmrec.io import atomic_path, existing_ancestor, folder_problem
from pyg_mmrec.train.run import resolve_device

#: The TikTok data set beside the checkout (``../shared``).
TIKTOK_ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '..',
                       'shared', 'datasets', 'tiktok-dev')


def peak_rss_gib() -> float:
    r"""The process's peak resident set size in GiB."""
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _integer(text: str, accept: Callable[[int], bool],
             requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(
            f"must be an integer {requirement}, got '{text}'")
    return value


def positive_int(text: str) -> int:
    r"""An integer :math:`\geq 1` (sizes, counts, repeats)."""
    return _integer(text, lambda v: v >= 1, '>= 1')


def non_negative_int(text: str) -> int:
    r"""An integer :math:`\geq 0`."""
    return _integer(text, lambda v: v >= 0, '>= 0')


def thread_count(text: str) -> int:
    r"""A CPU thread count :math:`\geq 1` (``torch.set_num_threads``
    raises on a negative one and would silently ignore 0 here)."""
    return positive_int(text)


def random_seed(text: str) -> int:
    r"""A random seed in :math:`[0, 2^{32})`, the range ``pyg-mmrec``'s
    :class:`~pyg_mmrec.train.TrainConfig` accepts (:func:`torch.manual_seed`
    raises on one beyond 64 bits)."""
    return _integer(text, lambda v: 0 <= v < 2**32, 'in [0, 2**32)')


def _real(text: str, accept: Callable[[float], bool],
          requirement: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # NaN fails every comparison, so 'nan' is refused with the rest.
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(
            f"must be a number {requirement}, got '{text}'")
    return value


def positive_float(text: str) -> float:
    r"""A finite number :math:`> 0` (seconds, GiB, GB/s)."""
    return _real(text, lambda v: v > 0, '> 0')


def non_negative_float(text: str) -> float:
    r"""A finite number :math:`\geq 0`."""
    return _real(text, lambda v: v >= 0, '>= 0')


def fraction(text: str) -> float:
    r"""A number in :math:`(0, 1]` (keep rates)."""
    return _real(text, lambda v: 0 < v <= 1, 'in (0, 1]')


def device_name(text: str) -> str:
    r"""``'auto'``, or a device :func:`resolve_device` accepts (``'cpu'``,
    ``'cuda'``, ``'cuda:N'`` on a machine that has it); returned as
    given, since the scripts differ in what ``'auto'`` means."""
    if text != 'auto':
        try:
            resolve_device(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def edge_count_problem(num_users: int, num_items: int,
                       num_edges: int) -> Optional[str]:
    r"""Why :obj:`num_edges` distinct user-item pairs cannot be drawn
    (the samplers would loop forever), or :obj:`None`."""
    if num_edges > num_users * num_items:
        return (f'{num_edges} edges do not fit {num_users} users x '
                f'{num_items} items (at most {num_users * num_items} '
                f'distinct pairs)')
    return None


def distinct_pairs(num_users: int, num_items: int, num_edges: int,
                   generator: torch.Generator,
                   draw: Optional[Callable[[int], Tensor]] = None) -> Tensor:
    r"""Exactly :obj:`num_edges` distinct user-item pairs, as sorted keys
    ``user * num_items + item``.

    :obj:`draw(missing)` returns random keys, a few more than the
    :obj:`missing` pairs (default: uniform over all pairs); rounds of draws
    are deduplicated until there are enough. Near full density most draws
    hit pairs already taken, so the last pairs would take (practically)
    forever: once the free pairs are fewer than twice the missing ones,
    those are picked among the free pairs directly (which costs one flag
    per pair, then no more than twice the edges), and draws that stall on
    rare pairs (a heavy-tailed :obj:`draw`) give way to uniform ones."""
    problem = edge_count_problem(num_users, num_items, num_edges)
    if problem:
        raise ValueError(problem)
    num_pairs = num_users * num_items

    def uniform(missing: int) -> Tensor:
        return torch.randint(num_pairs, (int(missing * 1.05) + 16, ),
                             generator=generator)

    draw = draw or uniform
    keys = torch.empty(0, dtype=torch.long)
    while keys.numel() < num_edges:
        missing = num_edges - keys.numel()
        if num_pairs - keys.numel() < 2 * missing:
            free = torch.ones(num_pairs, dtype=torch.bool)
            free[keys] = False
            free_keys = free.nonzero().view(-1)
            pick = torch.randperm(free_keys.numel(),
                                  generator=generator)[:missing]
            keys = torch.cat([keys, free_keys[pick]])
            break
        before = keys.numel()
        keys = torch.unique(torch.cat([keys, draw(missing)]))
        if keys.numel() - before < missing / 8:
            draw = uniform
    keep = torch.randperm(keys.numel(), generator=generator)[:num_edges]
    return keys[keep].sort().values


def output_folder(folder: str, names: Iterable[str] = ()) -> str:
    r"""Checks, by writing a probe file, that the files :obj:`names` can be
    written in :obj:`folder` (or, if it does not exist yet, that it can be
    created there), so that a bad ``--out`` fails before the benchmark runs
    rather than after. Creates nothing: :func:`write_outputs` makes the
    folder with the files, so that a run that fails leaves no empty
    folder behind. Raises an :class:`OutputError` naming the folder (or
    file) at fault."""
    if osp.exists(folder) and not osp.isdir(folder):
        raise OutputError(folder, 'is a file, not a folder')
    problem = folder_problem(folder)  # e.g. a parent that is a file
    if problem:
        raise OutputError(folder, f'cannot be created: {problem}')
    existing = existing_ancestor(folder)
    try:
        # Permission bits do not stop root, nor tell of a read-only mount.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        what = 'written' if existing == osp.abspath(folder) else 'created'
        raise OutputError(folder, f'cannot be {what} ({e.strerror})'
                          ) from None
    for name in names:
        if osp.isdir(osp.join(folder, name)):
            raise OutputError(osp.join(folder, name),
                              'is a folder, not a file')
    return folder


def write_outputs(folder: str, contents: Dict[str, Union[
        str, Callable[[str], None]]]) -> None:
    r"""Writes the files of :obj:`contents` in :obj:`folder`: file name ->
    text (written with a final newline) or a function that writes the file
    to the path it is given. All or none: each goes to a temporary file
    first, and they are renamed into place only once all are written."""
    with contextlib.ExitStack() as stack:
        paths = {name: stack.enter_context(atomic_path(osp.join(folder,
                                                                name)))
                 for name in contents}
        for name, content in contents.items():
            if isinstance(content, str):
                with open(paths[name], 'w') as f:
                    f.write(content + '\n')
            else:
                content(paths[name])
