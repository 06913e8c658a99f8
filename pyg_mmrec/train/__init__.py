r"""Training: explicit configs, the BPR training loop with validation-based
model selection, and runs with atomic checkpoints (what ``pyg-mmrec train``
uses)."""
from pyg_mmrec.train.config import TrainConfig
from pyg_mmrec.train.loop import TrainState, fit, run_epoch
from pyg_mmrec.train.registry import ModelSpec, register_model
from pyg_mmrec.train.run import (
    RunOptions,
    assemble,
    evaluate_checkpoint,
    resolve_device,
    restore,
    train,
)

__all__ = [
    'TrainConfig', 'TrainState', 'fit', 'run_epoch', 'ModelSpec',
    'register_model', 'RunOptions', 'assemble', 'train', 'restore',
    'evaluate_checkpoint', 'resolve_device'
]
