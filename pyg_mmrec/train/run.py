r"""Assembles a training run from explicit options: data set, model, preset,
overrides; writes ``metrics.json`` and checkpoints (atomically)."""
import contextlib
import dataclasses
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch_geometric.data import HeteroData

from pyg_mmrec.data.dataset import MultiModalRecDataset
from pyg_mmrec.data.hetero import num_users_items, split_edge_index
from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    DivergenceError,
    OutputError,
    describe,
)
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.io import (
    copy_file,
    deferred_signals,
    existing_ancestor,
    folder_problem,
    save_json,
    save_torch,
)
from pyg_mmrec.nn.models.base import Recommender
from pyg_mmrec.train.checkpoint import (
    best_checkpoint_of,
    checkpoint_document,
    configs_of,
    load_checkpoint,
    load_model_state,
)
from pyg_mmrec.train.config import TrainConfig, apply_overrides
from pyg_mmrec.train.loop import TrainState, fit
from pyg_mmrec.train.registry import PRESETS, get_spec


@dataclass
class RunOptions:
    r"""What the ``train`` command was asked to do. :obj:`model`,
    :obj:`dataset` and :obj:`preset` left as ``None`` mean ``'lightgcn'``,
    ``'synthetic'`` and no preset for a new run, and the checkpoint's with
    :obj:`resume` (where anything else must agree with the checkpoint).
    :obj:`out` left as ``None`` means the run's own folder when
    :obj:`resume` is that folder's ``last.pt``, so that the run goes on
    where it was, else ``'runs/latest'`` (resuming from an earlier
    ``checkpoint.pt`` in place would replace the later epochs)."""
    model: Optional[str] = None
    dataset: Optional[str] = None
    preset: Optional[str] = None
    overrides: List[Tuple[str, str]] = field(default_factory=list)
    out: Optional[str] = None
    resume: Optional[str] = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is None:
            self.out = 'runs/latest'
            if self.resume is not None:
                # The folder of the file itself, also through a link.
                folder = osp.dirname(
                    osp.realpath(self.resume) if osp.islink(self.resume)
                    else self.resume) or '.'
                last = osp.join(folder, RUN_FILES[1])
                if (osp.isfile(self.resume) and osp.isfile(last)
                        and osp.samefile(self.resume, last)):
                    self.out = folder


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
    # `is None`, not `or`: --dataset '' (an unset shell variable) must
    # fail as a missing folder, not train on the synthetic data.
    return dataclasses.replace(
        options, model=options.model or 'lightgcn',
        dataset='synthetic' if options.dataset is None else options.dataset)


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


#: The files a run writes in its output folder.
RUN_FILES = ('checkpoint.pt', 'last.pt', 'metrics.json')


def check_output_folder(out: str) -> None:
    r"""Raises an :class:`OutputError` before any training if the output
    folder :obj:`out` cannot be created or written, or holds a folder where
    a run writes a file, and a :class:`ConfigError` if it is an empty path
    (creating nothing)."""
    if not out:  # e.g. --out "$RUN" with RUN unset
        raise ConfigError('the output folder is an empty path')
    problem = folder_problem(out)
    if problem:
        raise OutputError(out, f'cannot be the output folder: {problem}')
    for name in RUN_FILES:
        path = osp.join(out, name)
        if osp.isdir(path):
            raise OutputError(path, 'is a folder where the run writes a '
                              'file')


def train(options: RunOptions) -> dict:
    r"""Runs training as the ``train`` command does and returns the
    ``metrics.json`` document."""
    if options.resume is not None:
        ckpt = load_checkpoint(options.resume)
        saved = configs_of(ckpt)
        configs = apply_overrides(saved, options.overrides)
        check_resume_options(options, ckpt, saved, configs)
        previous_best = best_checkpoint_of(options.resume, ckpt)
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
        try:
            optimizer.load_state_dict(ckpt['optimizer'])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(options.resume, f'holds an optimiser state '
                                  f'that does not fit the model '
                                  f'({describe(e)})') from None
        for group in optimizer.param_groups:  # honour a new --lr on resume
            group['lr'] = train_config.lr
        state = TrainState.from_dict(ckpt['train_state'])
        try:
            torch.set_rng_state(ckpt['rng'])
        except RuntimeError as e:
            raise CheckpointError(options.resume, f"'rng' is not a random "
                                  f"generator state ({describe(e)})"
                                  ) from None
        cuda_rng = ckpt.get('cuda_rng')
        if (cuda_rng is not None and torch.cuda.is_available()
                and len(cuda_rng) == torch.cuda.device_count()):
            torch.cuda.set_rng_state_all(cuda_rng)
    made = _missing_top(options.out)
    try:
        os.makedirs(options.out, exist_ok=True)
    except OSError as e:
        raise OutputError(options.out, f'cannot be created ({e.strerror})'
                          ) from None
    best_path, last_path, metrics_path = (osp.join(options.out, name)
                                          for name in RUN_FILES)

    def write_metrics(state: TrainState) -> dict:
        report = metrics_report(options.model, options.dataset, state,
                                train_config.seed, device)
        save_json(report, metrics_path)
        return report

    if previous_best is not None:
        # From the start, --out describes the resumed run: another run's
        # files left there would otherwise sit beside its metrics.json.
        with deferred_signals():
            for src, dst in ((previous_best, best_path),
                             (options.resume, last_path)):
                if not osp.exists(dst) or not osp.samefile(src, dst):
                    copy_file(src, dst)
            write_metrics(state)

    def on_epoch_end(state: TrainState, improved: bool) -> None:
        ckpt = checkpoint_document(options.model, options.dataset,
                                   options.preset, configs, model,
                                   optimizer, state)
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
            write_metrics(state)

    try:
        state = fit(model, data, run.sampler, optimizer, run.evaluator,
                    train_config,
                    state=state, on_epoch_end=on_epoch_end,
                    progress=options.progress)
    except BaseException:
        if made is not None:  # stopped before its first epoch ended
            _remove_empty_folders(options.out, made)
        raise
    return write_metrics(state)


def _missing_top(folder: str) -> Optional[str]:
    # The outermost folder of `folder` that does not exist yet (None if it
    # exists): what makedirs will create.
    existing, folder = existing_ancestor(folder), osp.abspath(folder)
    if existing == folder:
        return None
    return osp.join(existing, osp.relpath(folder, existing).split(os.sep)[0])


def _remove_empty_folders(folder: str, top: str) -> None:
    # Removes `folder` and its parents up to `top` while they are empty.
    folder = osp.abspath(folder)
    while True:
        try:
            os.rmdir(folder)
        except OSError:  # not empty: the files of the epochs done stay
            return
        if folder == top:
            return
        folder = osp.dirname(folder)


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
    # `is None`: --dataset '' is an empty path, not "the checkpoint's".
    recorded = dataset is None
    try:
        data = load_data(ckpt['dataset'] if recorded else dataset,
                         configs['data'])
    except DatasetError as e:
        if not recorded or e.path != ckpt['dataset']:
            raise
        # The path came from the checkpoint, not from the command line.
        raise DatasetError(e.path, f'{e.problem} (the data set folder '
                           f'recorded in {checkpoint}; pass --dataset to use '
                           f'another)') from None
    torch_device = resolve_device(device or checkpoint_device(ckpt))
    # The training seed, not 0: DiffMM draws its generated graphs' edge drops
    # from it, and a restored model must rebuild the graphs it was scored on.
    model = build_model(ckpt['model'], data, configs['model'],
                        configs['train'].seed, torch_device)
    load_model_state(model, ckpt, checkpoint)
    data = model.prepare(data.to(torch_device))
    model.eval()
    return model, data, ckpt


@contextlib.contextmanager
def scoring(checkpoint: str) -> Iterator[None]:
    r"""Within this context, a model that scores items as NaN or infinite
    is reported as a fault of :obj:`checkpoint` (a restored model did not
    diverge here)."""
    try:
        yield
    except DivergenceError:
        raise CheckpointError(checkpoint, 'holds a model that scores items '
                              'as NaN or infinite') from None


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
    with scoring(checkpoint):
        val = evaluator.evaluate(scores, 'val')
        test = evaluator.evaluate(scores, 'test')
    return {
        'model': ckpt['model'],
        'dataset': ckpt['dataset'] if dataset is None else dataset,
        # The epoch of these weights: the best one for checkpoint.pt, the
        # last one for last.pt.
        'epoch': ckpt['train_state']['next_epoch'] - 1,
        'val': val,
        'test': test,
    }
