import re

import pytest

from pyg_mmrec.nn.conv import (
    ModalityAwareConv,
    OneSidedNormConv,
    SymNormConv,
)


@pytest.mark.parametrize('cls', [SymNormConv, ModalityAwareConv,
                                 OneSidedNormConv])
def test_weighted_sum_layers_refuse_other_aggr_and_flow(cls):
    # The fused paths always sum from source to target; the scatter path
    # would honour `aggr` and `flow`, so the result would depend on the
    # adjacency type.
    name = cls.__name__
    for aggr in ['mean', 'max', ['add']]:
        with pytest.raises(ValueError, match=re.escape(
                f"{name} aggregates by weighted sum: aggr must be 'add', "
                f"got {aggr!r}")):
            cls(aggr=aggr)
    with pytest.raises(ValueError, match=re.escape(
            f"{name} propagates from edge_index[0] to edge_index[1]: flow "
            f"must be 'source_to_target', got 'target_to_source'")):
        cls(flow='target_to_source')
    conv = cls(aggr='sum', flow='source_to_target')  # PyG's own spelling
    assert str(conv) == str(cls())
