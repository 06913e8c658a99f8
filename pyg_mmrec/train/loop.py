r"""The training loop: BPR epochs, validation every epoch, model selection
on validation Recall@K, early stopping, test at the best epoch.

The loop holds no global state: the model, data, sampler, optimiser and
evaluator are passed in, so the same function runs one process of a
data-parallel job (give each rank its own sampler share).
"""
import inspect
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.errors import DivergenceError
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.nn.models.base import Recommender, device_clock
from pyg_mmrec.train.config import TrainConfig

Metrics = Dict[str, float]


@dataclass
class TrainState:
    r"""Everything needed to resume training and to report results."""
    next_epoch: int = 0
    best_epoch: int = -1
    best_val: Metrics = field(default_factory=dict)
    best_test: Metrics = field(default_factory=dict)
    epochs_without_improvement: int = 0
    history: List[dict] = field(default_factory=list)
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> 'TrainState':
        return cls(**state)


def _before_epoch(model: Recommender, data: HeteroData, epoch: int,
                  progress: bool) -> Dict[str, float]:
    # Overrides written before before_epoch took `progress` (a
    # Recommender subclass's public hook) keep working without it.
    params = inspect.signature(model.before_epoch).parameters
    takes = 'progress' in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes:
        return model.before_epoch(data, epoch, progress=progress)
    return model.before_epoch(data, epoch)


def run_epoch(model: Recommender, data: HeteroData, sampler: BPRSampler,
              optimizer: torch.optim.Optimizer, epoch: int,
              progress: bool = True) -> Metrics:
    r"""One epoch of :meth:`Recommender.train_step` over the sampler's
    batches; returns the mean of each loss part and the phase timings."""
    device = next(model.parameters()).device
    model.train()
    start = device_clock(device)
    phases = _before_epoch(model, data, epoch, progress)
    step_start = device_clock(device)
    sums: Dict[str, float] = {}
    bar = tqdm(sampler.epoch(epoch), total=len(sampler), leave=False,
               desc=f'epoch {epoch}', disable=None if progress else True)
    num_batches = 0
    for users, pos, neg in bar:
        batch = (users.to(device), pos.to(device), neg.to(device))
        parts = model.train_step(data, batch, optimizer)
        if not math.isfinite(parts['loss']):
            raise DivergenceError(
                f"the training loss became {parts['loss']} at epoch {epoch}, "
                f'batch {num_batches}: the model diverged (try a lower '
                f'learning rate, and check the scale of the item features)')
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        num_batches += 1
        bar.set_postfix(loss=f"{parts['loss']:.4f}")
    # Parts named 'seconds_<phase>' are time a step spent in a sub-phase
    # (e.g. MMSSL's discriminator): summed over the epoch and taken out of
    # the recommender phase, so that the phases still add up to the epoch.
    sub_phases = {key: sums.pop(key) for key in list(sums)
                  if key.startswith('seconds_')}
    means = {key: value / max(num_batches, 1) for key, value in sums.items()}
    end = device_clock(device)
    recommender = end - step_start - sum(sub_phases.values())
    phases = {**phases, 'recommender': recommender,
              **{key[len('seconds_'):]: v for key, v in sub_phases.items()}}
    return {**means, 'seconds_train': end - start,
            **{f'seconds_{k}': v for k, v in phases.items()}}


def fit(
    model: Recommender,
    data: HeteroData,
    sampler: BPRSampler,
    optimizer: torch.optim.Optimizer,
    evaluator: RankingEvaluator,
    config: TrainConfig,
    state: Optional[TrainState] = None,
    on_epoch_end: Optional[Callable[[TrainState, bool], None]] = None,
    progress: bool = True,
) -> TrainState:
    r"""Trains :obj:`model` until :obj:`config.epochs` or early stopping.

    After every epoch the model is evaluated on the validation split; when
    its Recall@K improves, the test split is evaluated too, so the reported
    test metrics are those of the epoch chosen on validation.

    Args:
        model (Recommender): The model, already :meth:`prepare`-d on
            :obj:`data`.
        data (HeteroData): The data set.
        sampler (BPRSampler): Draws the epoch's BPR triples.
        optimizer (torch.optim.Optimizer): The recommender's optimiser.
        evaluator (RankingEvaluator): Full-ranking validation and test.
        config (TrainConfig): Epochs, patience and :math:`K`. Its
            :obj:`seed` and :obj:`device` are not applied here (they are
            where the run is assembled, as
            :func:`~pyg_mmrec.train.assemble` does): the sampler holds its
            own seed, and batches go to the model's device, so move the
            model and the data there first (e.g. with
            :func:`~pyg_mmrec.train.resolve_device`).
        state (TrainState, optional): Resume from this state (returned
            unchanged if it stopped early and :obj:`config.patience` would
            stop it again).
        on_epoch_end (callable, optional): Called as
            ``on_epoch_end(state, improved)`` after every epoch (write
            checkpoints here).
        progress (bool): Show progress bars.
    """
    if config.k not in evaluator.ks:
        # Found before the first epoch, not as a KeyError after it.
        raise ValueError(f'the evaluator reports cut-offs {evaluator.ks}, '
                         f'but model selection uses k={config.k}: create it '
                         f'with ks including {config.k}')
    # Before the first epoch, not after it: both splits are evaluated.
    evaluator.check_split('val')
    evaluator.check_split('test')
    state = state or TrainState()
    if state.stopped_early:
        if 0 < config.patience <= state.epochs_without_improvement:
            # Training on would move the best epoch past the point where
            # early stopping ended the run.
            return state
        state.stopped_early = False  # a larger (or no) patience: go on
    key = f'recall@{config.k}'
    epochs = range(state.next_epoch, config.epochs)
    bar = tqdm(epochs, desc='training', initial=state.next_epoch,
               total=config.epochs, disable=None if progress else True)
    for epoch in bar:
        record = run_epoch(model, data, sampler, optimizer, epoch, progress)
        model.eval()
        eval_start = time.perf_counter()  # run_epoch ended synchronised
        val = evaluator.evaluate(model.score_fn(data), 'val')
        improved = not state.best_val or val[key] > state.best_val[key]
        if improved:
            state.best_epoch, state.best_val = epoch, val
            state.best_test = evaluator.evaluate(model.score_fn(data), 'test')
            state.epochs_without_improvement = 0
        else:
            state.epochs_without_improvement += 1
        record['seconds_eval'] = time.perf_counter() - eval_start
        state.history.append({
            'epoch': epoch,
            'seconds': record['seconds_train'] + record['seconds_eval'],
            'loss': record.pop('loss'),
            'val': val,
            **record,
        })
        state.next_epoch = epoch + 1
        if progress:
            loss = state.history[-1]['loss']
            # On stderr, with the bars: stdout carries the command's JSON.
            tqdm.write(f'epoch {epoch:3d}  loss {loss:.4f}'
                       f'  val {key} {val[key]:.4f}'
                       f'{"  *" if improved else ""}', file=sys.stderr)
        stop = (config.patience > 0
                and state.epochs_without_improvement >= config.patience)
        state.stopped_early = stop
        if on_epoch_end is not None:
            on_epoch_end(state, improved)
        if stop:
            break
    return state
