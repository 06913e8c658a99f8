r"""Multi-modal recommendation with PyTorch Geometric."""
import importlib
from typing import Any, List

__version__ = '0.1.0'

# Imported on first access, as PyG's subpackages are available after a bare
# ``import torch_geometric``, while ``import pyg_mmrec`` itself stays light
# (no torch) for tools that only read ``__version__``.
_SUBMODULES = ('data', 'errors', 'evaluation', 'graph', 'io', 'nn',
               'prepare', 'train', 'transforms')


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> List[str]:
    # The module's own names (__file__, __path__, ...), less its imports.
    names = set(globals()) - {'importlib', 'Any', 'List'}
    return sorted(names | set(_SUBMODULES))


__all__ = ['__version__']
