r"""Multi-modal recommendation with PyTorch Geometric."""
import importlib
from typing import Any, List

__version__ = '0.1.0'

# Imported on first access (``pyg_mmrec.nn.SymNormConv`` works after a bare
# ``import pyg_mmrec``, as in PyG), so that the command line starts without
# importing torch before it needs it.
_SUBMODULES = ('data', 'errors', 'evaluation', 'graph', 'io', 'nn',
               'prepare', 'train', 'transforms')


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> List[str]:
    return sorted([*globals(), *_SUBMODULES])


__all__ = ['__version__']
