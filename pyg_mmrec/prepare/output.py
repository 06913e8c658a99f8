r"""What :mod:`pyg_mmrec.prepare` may replace: an output folder is replaced
only when it is empty or holds nothing but the files of an earlier build
(checked against its ``recipe.json``) and the loader's cache, and no input
lies inside it."""
import inspect
import os
import os.path as osp
import re
from typing import List, Tuple

from pyg_mmrec.errors import ConfigError, OutputError
from pyg_mmrec.prepare import recipe as rcp
from pyg_mmrec.prepare.config import PrepareConfig
from pyg_mmrec.prepare.hashing import file_sha256

#: Files the loader (:class:`~pyg_mmrec.data.MultiModalRecDataset`) caches
#: in ``<data set>/processed`` (and the temporary files of an interrupted
#: write): derived data, which ``--overwrite`` may
#: replace along with the data set (it would be stale anyway).
_LOADER_CACHE = re.compile(r'\.?(data_[0-9a-f]{16}\.pt|pre_transform\.pt|'
                           r'pre_filter\.pt)(\.[^/]*\.tmp)?')


def _foreign_files(out: str) -> List[str]:
    r"""The entries of the prepared data set :obj:`out` that prepare did not
    write: anything but ``recipe.json``, the outputs it records (with their
    recorded checksums, so that a file edited or replaced since is kept)
    and the loader's cache. Everything, if the recipe records no outputs."""
    outputs = rcp.recorded_outputs(osp.join(out, rcp.RECIPE_FILE))
    names = sorted(os.listdir(out))
    if outputs is None:
        return names
    foreign = []
    for name in names:
        path = osp.join(out, name)
        if osp.islink(path):  # prepare writes no links
            foreign.append(name)
        elif name == rcp.RECIPE_FILE:
            continue
        elif name == 'processed' and osp.isdir(path):
            foreign += [osp.join(name, n) for n in sorted(os.listdir(path))
                        if not _LOADER_CACHE.fullmatch(n)
                        or not osp.isfile(osp.join(path, n))
                        or osp.islink(osp.join(path, n))]
        elif name not in outputs or not osp.isfile(path) or \
                file_sha256(path) != outputs[name]:
            foreign.append(name)
    return foreign


def check_output(out: str, overwrite: bool) -> None:
    r"""Refuses an output that exists and is not an empty folder, unless
    :obj:`overwrite` is set and it holds a prepared data set (a
    ``recipe.json``) and nothing else: never delete a file we did not
    write."""
    if osp.islink(out):
        # Replacing it would replace the link, not the folder it names.
        raise ConfigError(f"--out '{out}' is a symbolic link: give the "
                          f'folder it points to ({osp.realpath(out)})')
    if not osp.exists(out):
        return
    if not osp.isdir(out):
        raise ConfigError(f"--out '{out}' exists and is not a folder")
    if not os.listdir(out):
        return
    if not overwrite:
        raise ConfigError(f"--out '{out}' is not empty; pass --overwrite to "
                          'replace a data set prepared there')
    if not osp.isfile(osp.join(out, rcp.RECIPE_FILE)):
        raise ConfigError(f"--out '{out}' is not empty and holds no "
                          f'{rcp.RECIPE_FILE}: refusing to replace a folder '
                          'that is not a prepared data set')
    try:
        foreign = _foreign_files(out)
    except OSError as e:
        raise OutputError(out, f'cannot be read ({e.strerror})') from None
    if foreign:
        more = f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''
        raise ConfigError(
            f"--out '{out}' holds {foreign[0]}{more}, which prepare did not "
            'write or which changed since it did: refusing to replace the '
            'folder; move such files elsewhere or choose another --out')


def _input_files(config: PrepareConfig) -> List[Tuple[str, str]]:
    r"""``(what, path)`` of every input file or folder of :obj:`config`
    whose location is known without running it."""
    inputs = [('interactions table', config.interactions),
              ('item table', config.items)]
    inputs += [(f'{m} feature file', p) for m, p in config.features.items()]
    for modality, spec in config.encoders.items():
        path = None
        if isinstance(spec, str):  # a module name lives on sys.path
            module = spec.rpartition(':')[0]
            path = module if module.endswith('.py') else None
        else:
            try:
                path = inspect.getsourcefile(spec)
            except TypeError:  # built-in: no file
                pass
        if path:
            inputs.append((f'{modality} encoder module', path))
    if config.text_model:
        inputs.append(('text model', config.text_model))
    return inputs


def check_inputs_outside(config: PrepareConfig, out: str) -> None:
    r"""Refuses an input that lies inside :obj:`out`: writing replaces the
    whole folder, which would delete it."""
    real_out = osp.realpath(out)
    for what, path in _input_files(config):
        real = osp.realpath(path)
        if osp.commonpath([real, real_out]) == real_out:
            raise ConfigError(
                f"the {what} '{path}' lies inside --out '{out}', which "
                'prepare replaces as a whole: keep the inputs outside the '
                'output folder')
