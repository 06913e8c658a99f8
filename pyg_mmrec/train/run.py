r"""Assembles a training run from explicit options: data set, model, preset,
overrides; writes ``metrics.json`` and checkpoints (atomically)."""
import dataclasses
import os
import os.path as osp
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch_geometric.data import HeteroData

import pyg_mmrec
from pyg_mmrec.data.dataset import MultiModalRecDataset
from pyg_mmrec.data.hetero import num_users_items, split_edge_index
from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.errors import (
    CheckpointError,
    ConfigError,
    OutputError,
    describe,
)
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.io import (
    copy_file,
    deferred_signals,
    folder_problem,
    save_json,
    save_torch,
)
from pyg_mmrec.nn.models.base import Recommender
from pyg_mmrec.train.config import TrainConfig, apply_overrides
from pyg_mmrec.train.loop import TrainState, fit
from pyg_mmrec.train.registry import MODELS, PRESETS, get_spec

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = ('model', 'dataset', 'preset', 'configs', 'state_dict',
                   'optimizer', 'train_state', 'rng')


@dataclass
class RunOptions:
    r"""What the ``train`` command was asked to do. :obj:`model`,
    :obj:`dataset` and :obj:`preset` left as ``None`` mean ``'lightgcn'``,
    ``'synthetic'`` and no preset for a new run, and the checkpoint's with
    :obj:`resume` (where anything else must agree with the checkpoint)."""
    model: Optional[str] = None
    dataset: Optional[str] = None
    preset: Optional[str] = None
    overrides: List[Tuple[str, str]] = field(default_factory=list)
    out: str = 'runs/latest'
    resume: Optional[str] = None
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    r"""The device :obj:`name` names: ``'cpu'``, ``'cuda'``, ``'cuda:N'``,
    or ``'auto'`` (CUDA when available). Other device types are refused:
    the models' precision and timing choices know only these two."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'") from None
    if device.type not in ('cpu', 'cuda'):
        raise ConfigError(f"device '{name}' is not supported: use 'cpu', "
                          f"'cuda', 'cuda:N' or 'auto'")
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not "
                              f"available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device '{name}' requested but this machine "
                              f"has {count} CUDA device(s)")
    return device


def load_data(dataset: str,
              synthetic: Optional[SyntheticConfig] = None) -> HeteroData:
    r"""The :class:`HeteroData` of :obj:`dataset`: ``'synthetic'`` or a
    folder path."""
    if dataset == 'synthetic':
        return make_synthetic(synthetic or SyntheticConfig())
    return MultiModalRecDataset(dataset)[0]


def with_defaults(options: RunOptions) -> RunOptions:
    r""":obj:`options` of a new run, with an unset model and data set
    filled in: LightGCN on the synthetic data."""
    return dataclasses.replace(options, model=options.model or 'lightgcn',
                               dataset=options.dataset or 'synthetic')


def build_configs(options: RunOptions) -> Dict[str, Any]:
    r"""The train, model and synthetic-data configs of :obj:`options`:
    defaults, then the preset, then the explicit overrides."""
    options = with_defaults(options)
    spec = get_spec(options.model)
    configs: Dict[str, Any] = {
        'train': TrainConfig(**spec.train_defaults),
        'model': spec.config_cls(),
        'data': SyntheticConfig(),
    }
    if options.preset is not None:
        if options.preset not in PRESETS:
            raise ConfigError(f"unknown preset '{options.preset}' "
                              f"(available: {', '.join(PRESETS)})")
        if options.preset not in spec.presets:
            raise ConfigError(f"model '{options.model}' has no preset "
                              f"'{options.preset}'")
        configs['model'] = dataclasses.replace(configs['model'],
                                               **spec.presets[options.preset])
        configs['train'] = dataclasses.replace(
            configs['train'], **spec.train_presets.get(options.preset, {}))
    configs = apply_overrides(configs, options.overrides)
    if options.dataset != 'synthetic':
        changed = _changed_fields('data', SyntheticConfig(), configs['data'])
        if changed:
            raise ConfigError(f'{changed[0]} configures the synthetic data '
                              f'set, but --dataset is {options.dataset}')
    return configs


def _changed_fields(scope: str, old: Any, new: Any) -> List[str]:
    r"""``scope.field`` for every field of the dataclass :obj:`new` whose
    value differs from :obj:`old`'s."""
    return [f'{scope}.{f.name}' for f in dataclasses.fields(new)
            if getattr(new, f.name) != getattr(old, f.name)]


def build_model(name: str, data: HeteroData, model_config: Any,
                seed: int, device: torch.device) -> Recommender:
    torch.manual_seed(seed)
    try:
        model = get_spec(name).build(data, model_config, seed)
    except ValueError as e:  # the model rejected a hyper-parameter
        raise ConfigError(f"invalid '{name}' configuration: {e}") from None
    return model.to(device)


def build_optimizer(model: Recommender,
                    config: TrainConfig) -> torch.optim.Optimizer:
    return model.configure_optimizer(config.lr)


def metrics_report(model: str, dataset: str, state: TrainState,
                   seed: Optional[int] = None,
                   device: Optional[str] = None) -> dict:
    r"""The ``metrics.json`` document: model, data set, best epoch, its
    validation and test metrics, and every epoch's record. It also records the
    seed, the number of CPU threads and the device: on CPU the first two fix
    the result (the thread count decides how float sums are split), and
    another device rounds differently."""
    return {
        'model': model,
        'dataset': dataset,
        'best_epoch': state.best_epoch,
        'val': state.best_val,
        'test': state.best_test,
        'stopped_early': state.stopped_early,
        'seed': seed,
        'threads': torch.get_num_threads(),
        'device': device,
        'epochs': state.history,
    }


def _checkpoint(options: RunOptions, configs: Dict[str, Any],
                model: Recommender, optimizer: torch.optim.Optimizer,
                state: TrainState) -> dict:
    return {
        'format': CHECKPOINT_FORMAT,
        'version': pyg_mmrec.__version__,
        'model': options.model,
        # Absolute, so that evaluate and --resume find it from anywhere.
        'dataset': (options.dataset if options.dataset == 'synthetic' else
                    osp.abspath(options.dataset)),
        'preset': options.preset,
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


def load_checkpoint(path: str) -> dict:
    r"""Loads a checkpoint written by :func:`train` (tensors and plain data
    only: ``weights_only=True``)."""
    if not osp.isfile(path):
        raise CheckpointError(path, 'file not found')
    # torch's own message for a file that is not a checkpoint suggests
    # weights_only=False, which would run whatever the file holds.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(path, 'cannot be read as a checkpoint: not an '
                              'archive written by torch.save (another format '
                              'or a truncated file)')
    try:
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
    state = ckpt['train_state']
    fields = {f.name for f in dataclasses.fields(TrainState)}
    if not isinstance(state, dict) or not fields <= set(state):
        missing = sorted(fields - set(state)) if isinstance(state, dict) \
            else sorted(fields)
        return f"'train_state' lacks {', '.join(missing)}"
    return None


def configs_of(ckpt: dict) -> Dict[str, Any]:
    spec = get_spec(ckpt['model'])
    classes = {'train': TrainConfig, 'model': spec.config_cls,
               'data': SyntheticConfig}
    return {name: classes[name](**{
        k: tuple(v) if isinstance(v, list) else v
        for k, v in values.items()
    }) for name, values in ckpt['configs'].items()}


@dataclass
class Run:
    r"""The pieces of one training run, ready for
    :func:`pyg_mmrec.train.loop.fit`."""
    data: HeteroData
    model: Recommender
    optimizer: torch.optim.Optimizer
    sampler: BPRSampler
    evaluator: RankingEvaluator


def assemble(model_name: str, dataset: str, configs: Dict[str, Any]) -> Run:
    r"""Loads the data, builds and prepares the model on its device, and
    creates its optimiser, BPR sampler and evaluator from :obj:`configs`
    (as returned by :func:`build_configs`)."""
    train_config: TrainConfig = configs['train']
    device = resolve_device(train_config.device)
    data = load_data(dataset, configs['data'])
    num_users, num_items = num_users_items(data)
    model = build_model(model_name, data, configs['model'],
                        train_config.seed, device)
    data = model.prepare(data.to(device))
    sampler = BPRSampler(split_edge_index(data, 'train'), num_users,
                         num_items, train_config.batch_size,
                         seed=train_config.seed)
    evaluator = RankingEvaluator(data, ks=(train_config.k, ),
                                 batch_size=train_config.eval_batch_size)
    return Run(data, model, build_optimizer(model, train_config), sampler,
               evaluator)


def check_resume_options(options: RunOptions, ckpt: dict,
                         saved: Dict[str, Any], configs: Dict[str, Any]
                         ) -> None:
    r"""Raises unless :obj:`options` can continue the run of :obj:`ckpt`:
    the model, data set and preset are the checkpoint's, and
    :obj:`configs` (the checkpoint's :obj:`saved` configs with the
    overrides applied) leave the synthetic data and the cut-off :math:`K`,
    which decide the splits and the model selection so far, as they were."""
    if options.model is not None and options.model != ckpt['model']:
        raise CheckpointError(options.resume, f"holds a '{ckpt['model']}' "
                              f"model, not '{options.model}'")
    if options.dataset is not None and options.dataset != ckpt['dataset'] \
            and osp.abspath(options.dataset) != ckpt['dataset']:
        raise ConfigError(f"--dataset {options.dataset}: the resumed run "
                          f"trained on {ckpt['dataset']} (leave --dataset "
                          f"out to continue on it)")
    if options.preset is not None and options.preset != ckpt['preset']:
        used = f"preset {ckpt['preset']}" if ckpt['preset'] else 'no preset'
        raise ConfigError(f'--preset {options.preset}: the resumed run used '
                          f'{used}')
    fixed = _changed_fields('data', saved['data'], configs['data'])
    for name in ('k', 'seed'):
        if getattr(configs['train'], name) != getattr(saved['train'], name):
            fixed.append(f'train.{name}')
    if fixed:
        what = ('the earlier epochs trained with it' if fixed[0] ==
                'train.seed' else 'it decides the data split or the model '
                'selection so far')
        raise ConfigError(f'{fixed[0]} cannot change when resuming: {what} '
                          f'(start a new run instead)')


def _best_checkpoint_of(resume: str, ckpt: dict) -> str:
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
    other = load_checkpoint(best)
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


def check_output_folder(out: str) -> None:
    r"""Raises an :class:`OutputError` before any training if the output
    folder :obj:`out` cannot be created or written (creating nothing)."""
    problem = folder_problem(out)
    if problem:
        raise OutputError(out, f'cannot be the output folder: {problem}')


def train(options: RunOptions) -> dict:
    r"""Runs training as the ``train`` command does and returns the
    ``metrics.json`` document."""
    if options.resume is not None:
        ckpt = load_checkpoint(options.resume)
        saved = configs_of(ckpt)
        configs = apply_overrides(saved, options.overrides)
        check_resume_options(options, ckpt, saved, configs)
        previous_best = _best_checkpoint_of(options.resume, ckpt)
        options = dataclasses.replace(options, model=ckpt['model'],
                                      dataset=ckpt['dataset'],
                                      preset=ckpt['preset'])
    else:
        ckpt, previous_best = None, None
        options = with_defaults(options)
        configs = build_configs(options)
    check_output_folder(options.out)
    train_config: TrainConfig = configs['train']
    run = assemble(options.model, options.dataset, configs)
    data, model, optimizer = run.data, run.model, run.optimizer
    device = str(next(model.parameters()).device)
    state = None
    if ckpt is not None:
        load_model_state(model, ckpt, options.resume)
        optimizer.load_state_dict(ckpt['optimizer'])
        for group in optimizer.param_groups:  # honour a new --lr on resume
            group['lr'] = train_config.lr
        state = TrainState.from_dict(ckpt['train_state'])
        torch.set_rng_state(ckpt['rng'])
        cuda_rng = ckpt.get('cuda_rng')
        if (cuda_rng is not None and torch.cuda.is_available()
                and len(cuda_rng) == torch.cuda.device_count()):
            torch.cuda.set_rng_state_all(cuda_rng)
    try:
        os.makedirs(options.out, exist_ok=True)
    except OSError as e:
        raise OutputError(options.out, f'cannot be created ({e.strerror})'
                          ) from None
    best_path = osp.join(options.out, 'checkpoint.pt')
    last_path = osp.join(options.out, 'last.pt')
    metrics_path = osp.join(options.out, 'metrics.json')
    if previous_best is not None:
        # From the start, --out describes the resumed run: another run's
        # files left there would otherwise sit beside its metrics.json.
        with deferred_signals():
            for src, dst in ((previous_best, best_path),
                             (options.resume, last_path)):
                if not osp.exists(dst) or not osp.samefile(src, dst):
                    copy_file(src, dst)
            save_json(metrics_report(options.model, options.dataset, state,
                                     train_config.seed, device),
                      metrics_path)

    def on_epoch_end(state: TrainState, improved: bool) -> None:
        ckpt = _checkpoint(options, configs, model, optimizer, state)
        # All three files or none: an interruption between them used to
        # leave a checkpoint that metrics.json did not describe.
        with deferred_signals():
            # One serialisation per epoch: DiffMM's denoisers and their Adam
            # states make a TikTok checkpoint about 335 MB.
            if improved:
                save_torch(ckpt, best_path)
                copy_file(best_path, last_path)
            else:
                save_torch(ckpt, last_path)
            save_json(metrics_report(options.model, options.dataset, state,
                                     train_config.seed, device),
                      metrics_path)

    state = fit(model, data, run.sampler, optimizer, run.evaluator,
                train_config,
                state=state, on_epoch_end=on_epoch_end,
                progress=options.progress)
    report = metrics_report(options.model, options.dataset, state,
                            train_config.seed, device)
    save_json(report, metrics_path)
    return report


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
    mismatch = _state_dict_mismatch(ckpt['state_dict'], model.state_dict())
    if mismatch:
        raise CheckpointError(path, f'does not fit the model built for this '
                              f'data set ({model.num_users} users, '
                              f'{model.num_items} items): {mismatch}')
    try:
        model.load_state_dict(ckpt['state_dict'])
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(path, f'does not fit the model ({describe(e)})'
                              ) from None


def checkpoint_device(ckpt: dict) -> str:
    r"""The device :obj:`ckpt` was trained on if this machine has it (so
    that evaluation reproduces the run's metrics), else ``'cpu'``.
    Checkpoints that do not record it count as CPU runs."""
    saved = ckpt.get('device')
    if not isinstance(saved, str) or not saved.startswith('cuda'):
        return 'cpu'
    try:
        resolve_device(saved)
    except ConfigError:  # no (such) GPU here
        return 'cpu'
    return saved


def restore(checkpoint: str, dataset: Optional[str] = None,
            device: Optional[str] = None
            ) -> Tuple[Recommender, HeteroData, dict]:
    r"""The trained model of :obj:`checkpoint` and its (prepared) data, on
    :obj:`device` (default: :func:`checkpoint_device`)."""
    ckpt = load_checkpoint(checkpoint)
    configs = configs_of(ckpt)
    data = load_data(dataset or ckpt['dataset'], configs['data'])
    torch_device = resolve_device(device or checkpoint_device(ckpt))
    # The training seed, not 0: DiffMM draws its generated graphs' edge drops
    # from it, and a restored model must rebuild the graphs it was scored on.
    model = build_model(ckpt['model'], data, configs['model'],
                        configs['train'].seed, torch_device)
    load_model_state(model, ckpt, checkpoint)
    data = model.prepare(data.to(torch_device))
    model.eval()
    return model, data, ckpt


def evaluate_checkpoint(checkpoint: str, dataset: Optional[str] = None,
                        device: Optional[str] = None) -> dict:
    r"""Validation and test metrics of a saved model."""
    model, data, ckpt = restore(checkpoint, dataset, device)
    train_config = configs_of(ckpt)['train']
    # The batch size splits the float sums of the metrics: training's, so
    # that metrics.json is reproduced to the last bit.
    evaluator = RankingEvaluator(data, ks=(train_config.k, ),
                                 batch_size=train_config.eval_batch_size)
    scores = model.score_fn(data)
    return {
        'model': ckpt['model'],
        'dataset': dataset or ckpt['dataset'],
        # The epoch of these weights: the best one for checkpoint.pt, the
        # last one for last.pt.
        'epoch': ckpt['train_state']['next_epoch'] - 1,
        'val': evaluator.evaluate(scores, 'val'),
        'test': evaluator.evaluate(scores, 'test'),
    }
