r"""Explicit configuration objects and ``key=value`` overrides."""
import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Dict, Iterable, List, Tuple

from pyg_mmrec.errors import ConfigError, check_config


@dataclass
class TrainConfig:
    r"""Options of the training loop (model hyper-parameters live in each
    model's own config).

    Args:
        epochs (int): Maximum number of epochs.
        batch_size (int): BPR triples per step.
        lr (float): Learning rate of the recommender's optimiser.
        patience (int): Stop after this many epochs without a better
            validation Recall@K (0 disables early stopping).
        eval_batch_size (int): Users scored at once during evaluation.
        k (int): Cut-off :math:`K` of the reported metrics and of model
            selection (the best epoch has the best validation Recall@K).
        seed (int): Seed of initialisation and sampling, applied where
            the run is assembled (:func:`~pyg_mmrec.train.assemble`, and so
            ``pyg-mmrec train``). :func:`~pyg_mmrec.train.fit` draws no
            random numbers itself: a run built by hand calls
            ``torch.manual_seed(seed)`` before building its model (whose
            initialisation draws from torch's global generator), and passes
            the seed to the model's builder where it takes one (e.g.
            :func:`~pyg_mmrec.nn.models.build_diffmm`) and to
            :class:`~pyg_mmrec.data.BPRSampler`.
        device (str): ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``.
    """
    epochs: int = 50
    batch_size: int = 1024
    lr: float = 1e-3
    patience: int = 10
    eval_batch_size: int = 1024
    k: int = 20
    seed: int = 0
    device: str = 'auto'

    def __post_init__(self) -> None:
        check_config(self, at_least_one=('epochs', 'batch_size',
                                         'eval_batch_size', 'k'),
                     non_negative=('patience', ),
                     learning_rate=('lr', ))
        # Derived seeds (seed * 100003 + epoch) must stay within 64 bits.
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f'seed must be in [0, 2**32), got {self.seed}')


def _convert(value: str, target: Any, key: str) -> Any:
    kind = type(target)
    try:
        if kind is bool:
            if value.lower() in ('1', 'true', 'yes', 'on'):
                return True
            if value.lower() in ('0', 'false', 'no', 'off'):
                return False
            raise ValueError(value)
        if kind is tuple:
            return tuple(v.strip() for v in value.split(',') if v.strip())
        return kind(value)
    except ValueError:
        raise ConfigError(f"cannot set '{key}' to '{value}': expected "
                          f"{kind.__name__}") from None


def parse_overrides(items: Iterable[str]) -> List[Tuple[str, str]]:
    r"""Parses ``key=value`` strings."""
    out = []
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form "
                              f"key=value")
        out.append((key.strip(), value.strip()))
    return out


def apply_overrides(configs: Dict[str, Any],
                    overrides: Iterable[Tuple[str, str]]) -> Dict[str, Any]:
    r"""Returns copies of the dataclass :obj:`configs` (by name) with the
    :obj:`overrides` applied. A key ``name.field`` targets one config; a
    bare ``field`` the first config that has it."""
    values: Dict[str, Dict[str, Any]] = {name: {} for name in configs}
    for key, value in overrides:
        scope, _, field = key.rpartition('.')
        candidates = [scope] if scope else list(configs)
        target = next((name for name in candidates if name in configs and
                       field in {f.name for f in fields(configs[name])}),
                      None)
        if target is None:
            known = sorted(f'{name}.{f.name}' for name, cfg in configs.items()
                           for f in fields(cfg))
            raise ConfigError(f"unknown option '{key}' (known: "
                              f"{', '.join(known)})")
        current = getattr(configs[target], field)
        values[target][field] = _convert(value, current, key)
    return {
        name: dataclasses.replace(cfg, **values[name])
        for name, cfg in configs.items()
    }
