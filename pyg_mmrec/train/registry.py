r"""The models the command line can train, with their presets."""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict

from torch_geometric.data import HeteroData

from pyg_mmrec.errors import ConfigError
from pyg_mmrec.nn.models.base import Recommender
from pyg_mmrec.nn.models.diffmm import DIFFMM_PRESETS, DiffMMConfig
from pyg_mmrec.nn.models.diffmm import build_diffmm
from pyg_mmrec.nn.models.lightgcn import LightGCNConfig, LightGCNRecommender
from pyg_mmrec.nn.models.mmssl import MMSSL_PRESETS, MMSSLConfig, build_mmssl


@dataclass
class ModelSpec:
    r"""How to build one model from its config and the data.

    Attributes:
        config_cls: The model's hyper-parameter dataclass.
        build: ``build(data, config, seed) -> Recommender``.
        presets: Named overrides of the model config (the papers' settings).
        train_presets: Named overrides of :class:`TrainConfig` that go with
            each preset (learning rate, epochs, batch size, patience).
        train_defaults: Overrides of :class:`TrainConfig` that the model's
            recipe fixes with or without a preset (e.g. its optimiser's
            learning rate).
    """
    config_cls: type
    build: Callable[[HeteroData, Any, int], Recommender]
    presets: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    train_presets: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    train_defaults: Dict[str, Any] = field(default_factory=dict)


def _build_lightgcn(data: HeteroData, config: LightGCNConfig,
                    seed: int = 0) -> Recommender:
    return LightGCNRecommender(data['user'].num_nodes,
                               data['item'].num_nodes, config)


MODELS: Dict[str, ModelSpec] = {
    'lightgcn': ModelSpec(LightGCNConfig, _build_lightgcn),
    'diffmm': ModelSpec(
        DiffMMConfig, build_diffmm, presets=DIFFMM_PRESETS,
        # MODELS.md: Adam at 1e-3, batch 1024, the paper's 50 epochs, and
        # no early stopping (which it names for MMSSL only); the best epoch
        # is still chosen on validation.
        train_presets={name: dict(lr=1e-3, batch_size=1024, epochs=50,
                                  patience=0)
                       for name in DIFFMM_PRESETS}),
    'mmssl': ModelSpec(
        MMSSLConfig, build_mmssl, presets=MMSSL_PRESETS,
        train_presets={name: dict(lr=5.5e-4, batch_size=1024, epochs=50,
                                  patience=7)
                       for name in MMSSL_PRESETS},
        # The paper's AdamW at 5.5e-4, early stopping with patience 7.
        train_defaults=dict(lr=5.5e-4, patience=7)),
}

PRESETS = ('tiktok', 'baby', 'sports')


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}' (available: "
                          f"{', '.join(MODELS)})")
    return MODELS[name]


def register_model(name: str, spec: ModelSpec) -> None:
    r"""Makes a model available under :obj:`name` to
    :func:`~pyg_mmrec.train.train` (as ``RunOptions(model=name)``),
    :func:`~pyg_mmrec.train.restore` and
    :func:`~pyg_mmrec.train.evaluate_checkpoint`, in this Python process:
    the ``pyg-mmrec`` command knows the built-in models only."""
    MODELS[name] = spec
