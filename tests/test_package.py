import subprocess
import sys

import pytest


def test_submodules_load_on_first_access():
    # A fresh interpreter: in this one the tests have imported them all.
    code = '''
import sys
import pyg_mmrec
assert 'torch' not in sys.modules, 'import pyg_mmrec imported torch'
conv = pyg_mmrec.nn.SymNormConv  # before any import of pyg_mmrec.nn
assert {'nn', 'data', 'transforms', 'train'} <= set(dir(pyg_mmrec))
from pyg_mmrec.nn import SymNormConv
assert conv is SymNormConv
assert pyg_mmrec.transforms.SymmetricNorm.__name__ == 'SymmetricNorm'
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0 and out.stdout == 'ok\n', out.stderr


def test_unknown_attribute_is_an_attribute_error():
    import pyg_mmrec
    with pytest.raises(AttributeError, match="module 'pyg_mmrec' has no "
                       "attribute 'nope'"):
        pyg_mmrec.nope
    assert not hasattr(pyg_mmrec, 'cli_main')
