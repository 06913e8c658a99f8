r"""Range checks of the hyper-parameter dataclasses (``check_config``)."""
import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from pyg_mmrec.errors import ConfigError, check_config
from pyg_mmrec.nn.models.diffmm import DiffMMConfig
from pyg_mmrec.nn.models.lightgcn import LightGCNConfig
from pyg_mmrec.nn.models.mmssl import MMSSLConfig
from pyg_mmrec.train.config import (
    TrainConfig,
    apply_overrides,
    parse_overrides,
)
from pyg_mmrec.train.registry import MODELS


@dataclass
class Example:
    size: int = 2
    rate: float = 0.1
    weight: float = 0.0
    dropout: float = 0.5
    keep: float = 1.0
    lr: float = 1e-3
    kind: str = 'a'

    def __post_init__(self) -> None:
        check_config(self, at_least_one=('size', ), positive=('rate', ),
                     non_negative=('weight', ), probability=('dropout', ),
                     fraction=('keep', ), learning_rate=('lr', ),
                     choices=dict(kind=('a', 'b')))


def test_valid_edges_pass():
    Example(size=1, rate=1e-12, weight=0.0, dropout=0.0, keep=1.0, lr=1e30,
            kind='b')


@pytest.mark.parametrize('field, value, message', [
    ('size', 0, 'size must be >= 1, got 0'),
    ('size', 2.0, 'size must be an integer, got 2.0'),
    ('size', True, 'size must be an integer, got True'),
    ('rate', 0.0, 'rate must be > 0, got 0.0'),
    ('rate', float('nan'), 'rate must be > 0, got nan'),
    ('rate', float('inf'), 'rate must be finite, got inf'),
    ('weight', -1e-9, 'weight must be >= 0, got -1e-09'),
    ('weight', float('nan'), 'weight must be >= 0, got nan'),
    ('weight', float('inf'), 'weight must be finite, got inf'),
    ('dropout', 1.0, 'dropout must be in [0, 1), got 1.0'),
    ('dropout', -0.1, 'dropout must be in [0, 1), got -0.1'),
    ('keep', 0.0, 'keep must be in (0, 1], got 0.0'),
    ('keep', 1.5, 'keep must be in (0, 1], got 1.5'),
    ('lr', 0.0, 'lr must be > 0, got 0.0'),
    ('lr', float('nan'), 'lr must be > 0, got nan'),
    ('lr', float('inf'), 'lr must be finite, got inf'),
    ('lr', 1.01e30, 'lr must be at most 1e+30, got 1.01e+30'),
    ('kind', 'c', "kind must be one of 'a', 'b', got 'c'"),
])
def test_out_of_range_names_field_and_value(field, value, message):
    with pytest.raises(ConfigError) as info:
        Example(**{field: value})
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)  # library callers catch these


def test_defaults_and_presets_are_valid():
    for spec in MODELS.values():
        spec.config_cls()
        for preset in spec.presets.values():
            dataclasses.replace(spec.config_cls(), **preset)


# Each of these used to be accepted silently (a negative layer count, a zero
# learning rate) or to fail mid-training with a traceback.
@pytest.mark.parametrize('config_cls, field, value, message', [
    (DiffMMConfig, 'num_layers', -1, 'num_layers must be >= 0'),
    (DiffMMConfig, 'embedding_dim', 0, 'embedding_dim must be >= 1'),
    (DiffMMConfig, 'keep_rate', 0.0, r'keep_rate must be in \(0, 1\]'),
    (DiffMMConfig, 'topk', 0, 'topk must be >= 1'),
    (DiffMMConfig, 'time_channels', 0, 'time_channels must be >= 1'),
    (DiffMMConfig, 'diffusion_batch_size', 0,
     'diffusion_batch_size must be >= 1'),
    (DiffMMConfig, 'temperature', 0.0, 'temperature must be > 0'),
    (DiffMMConfig, 'denoiser_lr', 0.0, 'denoiser_lr must be > 0'),
    (DiffMMConfig, 'denoiser_lr', 1e38, r'denoiser_lr must be at most 1e\+30'),
    (DiffMMConfig, 'reg_weight', -1.0, 'reg_weight must be >= 0'),
    (DiffMMConfig, 'cl_method', 2, 'cl_method must be one of 0, 1'),
    (DiffMMConfig, 'backend', 'dense', 'backend must be one of'),
    (MMSSLConfig, 'embedding_dim', 0, 'embedding_dim must be >= 1'),
    (MMSSLConfig, 'num_layers', 0, 'num_layers must be >= 1'),
    (MMSSLConfig, 'feature_dropout', 1.5,
     r'feature_dropout must be in \[0, 1\)'),
    (MMSSLConfig, 'gumbel_temperature', 0.0,
     'gumbel_temperature must be > 0'),
    (MMSSLConfig, 'disc_hidden', 0, 'disc_hidden must be >= 1'),
    (MMSSLConfig, 'disc_lr', 0.0, 'disc_lr must be > 0'),
    (MMSSLConfig, 'disc_lr', 1e38, r'disc_lr must be at most 1e\+30'),
    (MMSSLConfig, 'graph_rate', 0.0, r'graph_rate must be in \(0, 1\]'),
    (MMSSLConfig, 'graph_batch_size', 0, 'graph_batch_size must be >= 1'),
    (MMSSLConfig, 'weight_decay', -1.0, 'weight_decay must be >= 0'),
    (MMSSLConfig, 'max_grad_norm', -1.0, 'max_grad_norm must be >= 0'),
    (MMSSLConfig, 'discriminator', 'x', 'discriminator must be one of'),
    (LightGCNConfig, 'num_layers', -1, 'num_layers must be >= 0'),
    (LightGCNConfig, 'embedding_dim', 0, 'embedding_dim must be >= 1'),
    (LightGCNConfig, 'reg_weight', -1.0, 'reg_weight must be >= 0'),
])
def test_model_configs_reject(config_cls, field, value, message):
    with pytest.raises(ConfigError, match=message):
        config_cls(**{field: value})
    with pytest.raises(ConfigError, match=message):  # replace checks too
        dataclasses.replace(config_cls(), **{field: value})


def test_bounds_are_inclusive_where_the_math_allows():
    assert LightGCNConfig(num_layers=0).num_layers == 0  # matrix fact.
    assert DiffMMConfig(num_layers=0, keep_rate=1.0).keep_rate == 1.0
    assert MMSSLConfig(feature_dropout=0.0).feature_dropout == 0.0


@dataclass
class Counted:
    count: int = 0  # in no range list: only its annotation is checked
    rate: float = 1  # an int is a fine float

    def __post_init__(self) -> None:
        check_config(self)


# Fields annotated int used to accept floats, which then failed deep inside
# (range(1.5), torch.randn(12.5, ...)) with a cryptic TypeError.
@pytest.mark.parametrize('make, message', [
    (lambda: LightGCNConfig(num_layers=1.5),
     'num_layers must be an integer, got 1.5'),
    (lambda: LightGCNConfig(num_layers=True),
     'num_layers must be an integer, got True'),
    (lambda: DiffMMConfig(num_layers=1.5),
     'num_layers must be an integer, got 1.5'),
    (lambda: DiffMMConfig(cl_method=1.0),
     'cl_method must be an integer, got 1.0'),
    (lambda: MMSSLConfig(num_layers=2.0),
     'num_layers must be an integer, got 2.0'),
    (lambda: MMSSLConfig(preference_chunk_size=0.5),
     'preference_chunk_size must be an integer, got 0.5'),
    (lambda: TrainConfig(patience=2.5),
     'patience must be an integer, got 2.5'),
    (lambda: TrainConfig(seed=1.5), 'seed must be an integer, got 1.5'),
    (lambda: dataclasses.replace(LightGCNConfig(), num_layers=1.5),
     'num_layers must be an integer, got 1.5'),
    (lambda: Counted(count=0.5), 'count must be an integer, got 0.5'),
    (lambda: Counted(count='3'), "count must be an integer, got '3'"),
])
def test_int_fields_must_be_integers(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value) == message


def test_int_fields_accept_python_and_numpy_integers():
    config = LightGCNConfig(embedding_dim=np.int32(8),
                            num_layers=np.int64(2))
    assert config.num_layers == 2 and config.embedding_dim == 8
    assert Counted(count=-3, rate=2).rate == 2
    assert TrainConfig(seed=np.uint32(7)).seed == 7


def test_overrides_convert_to_int_before_the_check():
    configs = dict(model=LightGCNConfig(), train=TrainConfig())
    out = apply_overrides(configs, parse_overrides(['num_layers=2',
                                                    'train.patience=0']))
    assert out['model'].num_layers == 2 and out['train'].patience == 0
    with pytest.raises(ConfigError, match="cannot set 'num_layers' to "
                       "'1.5': expected int"):
        apply_overrides(configs, parse_overrides(['num_layers=1.5']))
