import importlib
import os

import pytest


@pytest.mark.skipif(os.environ.get('CI') != 'true',
                    reason='only CI promises the compiled extras')
@pytest.mark.parametrize('module', ['torch_scatter', 'torch_sparse'])
def test_ci_has_the_compiled_sparse_extras(module):
    # CI installs the `sparse` extra so the fused torch-sparse paths are
    # tested for real; fail loudly instead of silently skipping them.
    importlib.import_module(module)
    import torch_geometric.typing
    flag = 'WITH_TORCH_SPARSE' if module == 'torch_sparse' else \
        'WITH_TORCH_SCATTER'
    assert getattr(torch_geometric.typing, flag)
