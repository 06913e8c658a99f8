r"""Checkpoint files of a training run: what they hold, and loading them
with every check that makes a foreign, truncated or mismatched file one
clear :class:`~pyg_mmrec.errors.CheckpointError`."""
import dataclasses
import os
import os.path as osp
import pickle
import stat
import zipfile
from dataclasses import asdict
from typing import Any, Dict, Optional

import torch

import pyg_mmrec
from pyg_mmrec.data.synthetic import SyntheticConfig
from pyg_mmrec.errors import CheckpointError, describe
from pyg_mmrec.nn.models.base import Recommender
from pyg_mmrec.train.config import TrainConfig
from pyg_mmrec.train.loop import TrainState
from pyg_mmrec.train.registry import MODELS, get_spec

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ('model', 'dataset', 'preset', 'configs', 'state_dict',
                   'optimizer', 'train_state', 'rng')


# The train_state fields a checkpoint must hold with their types (and the
# least value of the integer ones).
_STATE_FIELDS = (('next_epoch', int, 0), ('best_epoch', int, -1),
                 ('epochs_without_improvement', int, 0),
                 ('best_val', dict, None), ('best_test', dict, None),
                 ('history', list, None), ('stopped_early', bool, None))
_KIND_WORDS = {(int, 0): 'a count (an integer >= 0)',
               (int, -1): 'an epoch (an integer >= -1)',
               (dict, None): 'a mapping', (list, None): 'a list',
               (bool, None): 'true or false'}


def checkpoint_document(model_name: str, dataset: str,
                        preset: Optional[str], configs: Dict[str, Any],
                        model: Recommender,
                        optimizer: torch.optim.Optimizer,
                        state: TrainState) -> dict:
    r"""What a checkpoint file holds: the run (model name, data set,
    preset, configs), the weights, the optimiser, the training state and the
    random number generators' states."""
    return {
        'format': CHECKPOINT_FORMAT,
        'version': pyg_mmrec.__version__,
        'model': model_name,
        # Absolute, so that evaluate and --resume find it from anywhere.
        'dataset': (dataset if dataset == 'synthetic' else
                    osp.abspath(dataset)),
        'preset': preset,
        'configs': {name: asdict(cfg) for name, cfg in configs.items()},
        'state_dict': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'train_state': state.to_dict(),
        # Where it trained: evaluation there reproduces its metrics (a GPU
        # rounds differently, and DiffMM rebuilds its graphs on load).
        'device': str(next(model.parameters()).device),
        'rng': torch.get_rng_state(),
        # Dropout and noise drawn on the GPU come from its own generators;
        # without their state a resumed run would replay them from the seed.
        'cuda_rng': (torch.cuda.get_rng_state_all()
                     if torch.cuda.is_available()
                     and torch.cuda.is_initialized() else None),
    }


def load_checkpoint(path: str, mmap: bool = False) -> dict:
    r"""Loads a checkpoint written by :func:`~pyg_mmrec.train.run.train`
    (tensors and plain data only: ``weights_only=True``). With :obj:`mmap`,
    the tensors stay in the file (memory-mapped) until first read."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # also a broken link, or a folder we may not enter
        raise CheckpointError(path, 'file not found') from None
    if stat.S_ISDIR(mode):
        try:
            held = sorted(n for n in os.listdir(path) if n.endswith('.pt'))
        except OSError:  # an unreadable folder is still a folder
            held = []
        shown = ', '.join(held[:3]) + (', ...' if len(held) > 3 else '')
        raise CheckpointError(
            path, 'is a folder, not a checkpoint file' +
            (f' (it holds {shown})' if held else ''))
    if not stat.S_ISREG(mode):
        raise CheckpointError(path, 'is not a regular file')
    # torch's own message for a file that is not a checkpoint suggests
    # weights_only=False, which would run whatever the file holds.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(path, 'cannot be read as a checkpoint: not an '
                              'archive written by torch.save (another format '
                              'or a truncated file)')
    try:
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True,
                              mmap=mmap)
        except (OSError, RuntimeError):
            if not mmap:
                raise
            # A file system that cannot map files: read it instead.
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(path, 'cannot be read as a checkpoint: it holds '
                              'objects other than tensors and plain data, '
                              'which are not unpickled') from None
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(
            path, f'cannot be read as a checkpoint ({describe(e)})') from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(path, 'not a pyg_mmrec checkpoint')
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(path, f"lacks '{missing[0]}': not a complete "
                              f'pyg_mmrec checkpoint')
    if not isinstance(ckpt['model'], str):
        raise CheckpointError(path, "not a complete pyg_mmrec checkpoint: "
                              "'model' is not a name")
    if ckpt['model'] not in MODELS:
        raise CheckpointError(path, f"holds a '{ckpt['model']}' model, which "
                              f"this version of pyg_mmrec does not know "
                              f"(available: {', '.join(MODELS)})")
    problem = _structure_problem(ckpt)
    if problem:
        raise CheckpointError(path, f'not a complete pyg_mmrec checkpoint: '
                              f'{problem}')
    try:
        configs_of(ckpt)
        TrainState.from_dict(ckpt['train_state'])
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(path, f'holds settings this version of '
                              f'pyg_mmrec cannot read ({describe(e)})'
                              ) from None
    return ckpt


def _structure_problem(ckpt: dict) -> Optional[str]:
    # What a hand-edited or foreign file lacks that every checkpoint written
    # by train() has; the dataclasses would otherwise fill a missing field
    # with its default (a train_state of {} reads as "no epoch yet").
    if not isinstance(ckpt['dataset'], str):
        return "'dataset' is not a path"
    if ckpt['preset'] is not None and not isinstance(ckpt['preset'], str):
        return "'preset' is not a name"
    configs = ckpt['configs']
    if not isinstance(configs, dict) or \
            set(configs) != {'train', 'model', 'data'}:
        return "'configs' does not hold the sections train, model and data"
    for name, values in configs.items():
        if not isinstance(values, dict):
            return f"'configs.{name}' is not a mapping"
    rng = ckpt['rng']
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        return "'rng' is not a random generator state"
    optimizer = ckpt['optimizer']
    if not isinstance(optimizer, dict) or \
            not isinstance(optimizer.get('state'), dict) or \
            not isinstance(optimizer.get('param_groups'), list):
        return "'optimizer' is not an optimiser state"
    state = ckpt['train_state']
    fields = {f.name for f in dataclasses.fields(TrainState)}
    if not isinstance(state, dict) or not fields <= set(state):
        missing = sorted(fields - set(state)) if isinstance(state, dict) \
            else sorted(fields)
        return f"'train_state' lacks {', '.join(missing)}"
    for name, kind, low in _STATE_FIELDS:
        value = state[name]
        # (bool is an int: an epoch of True is not an epoch.)
        if not isinstance(value, kind) or (kind is int and (
                isinstance(value, bool) or value < low)):
            return f"'train_state.{name}' is not {_KIND_WORDS[kind, low]}"
    return None


def configs_of(ckpt: dict) -> Dict[str, Any]:
    spec = get_spec(ckpt['model'])
    classes = {'train': TrainConfig, 'model': spec.config_cls,
               'data': SyntheticConfig}
    return {name: classes[name](**{
        k: tuple(v) if isinstance(v, list) else v
        for k, v in values.items()
    }) for name, values in ckpt['configs'].items()}


def best_checkpoint_of(resume: str, ckpt: dict) -> str:
    r"""The checkpoint of the best epoch of the run :obj:`ckpt` (read from
    :obj:`resume`): :obj:`resume` itself if its last epoch was the best,
    else the ``checkpoint.pt`` beside it, which must be of the same run at
    the same best epoch."""
    state = TrainState.from_dict(ckpt['train_state'])
    if state.best_epoch == state.next_epoch - 1:
        return resume
    best = osp.join(osp.dirname(osp.realpath(resume)), 'checkpoint.pt')
    if not osp.isfile(best):
        raise CheckpointError(resume, f'has no checkpoint.pt beside it, '
                              f'which holds the model of its best epoch '
                              f'({state.best_epoch}); the resumed run needs '
                              f'it')
    # Mapped, not read: of its ~335 MB (DiffMM on TikTok) only the
    # fields compared below are needed.
    other = load_checkpoint(best, mmap=True)
    other_state = TrainState.from_dict(other['train_state'])
    # (A resumed run may have changed --lr or --epochs since, so the
    # configs may differ; the best epoch's validation figures may not.)
    if (other['model'], other['dataset'], other_state.best_epoch,
            other_state.best_val) != (ckpt['model'], ckpt['dataset'],
                                      state.best_epoch, state.best_val):
        raise CheckpointError(resume, f'is not of the run of the '
                              f'checkpoint.pt beside it (another model, '
                              f'data set or best epoch): the resumed run '
                              f'needs the model of its own best epoch '
                              f'({state.best_epoch})')
    return best


def _state_dict_mismatch(saved: Dict[str, Any],
                         expected: Dict[str, Any]) -> Optional[str]:
    missing = [key for key in expected if key not in saved]
    if missing:
        return f"it lacks '{missing[0]}'"
    unexpected = [key for key in saved if key not in expected]
    if unexpected:
        return f"it has '{unexpected[0]}', which the model does not"
    for key, value in expected.items():
        if not (isinstance(value, torch.Tensor) and
                isinstance(saved[key], torch.Tensor)):
            continue  # a module's extra state, checked by the module
        if saved[key].shape != value.shape:
            return (f"'{key}' has shape {list(saved[key].shape)} in the "
                    f"checkpoint but {list(value.shape)} in the model")
    return None


def load_model_state(model: Recommender, ckpt: dict, path: str) -> None:
    r"""Loads the weights of checkpoint :obj:`ckpt` (read from :obj:`path`)
    into :obj:`model`, or raises a :class:`CheckpointError` naming the first
    parameter that does not fit (typically: the data set has other user or
    item counts than the one the checkpoint was trained on)."""
    # Parameter names of earlier versions of the model, renamed.
    state = model.upgrade_state_dict(ckpt['state_dict'])
    mismatch = _state_dict_mismatch(state, model.state_dict())
    if mismatch:
        # The sizes alone can be cryptic (LightGCN's one table holds users
        # and items): name the data set the checkpoint was trained on.
        raise CheckpointError(path, f'does not fit the model built for this '
                              f'data set ({model.num_users} users, '
                              f'{model.num_items} items; the checkpoint was '
                              f"trained on '{ckpt['dataset']}'): {mismatch}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(path, f'does not fit the model ({describe(e)})'
                              ) from None
