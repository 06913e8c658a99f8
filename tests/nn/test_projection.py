import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from pyg_mmrec.nn.projection import ModalityProjection


def _features(dtype=torch.float32):
    torch.manual_seed(0)
    return {'visual': torch.randn(5, 4).to(dtype),
            'acoustic': torch.randn(5, 3).to(dtype)}


@pytest.mark.parametrize('kind', ['linear', 'leaky'])
def test_projection_matches_formula(kind):
    # f_m(F_m) = F_m W_m + b_m (trans=1) or LeakyReLU_0.2(F_m W_m) (trans=0).
    proj = ModalityProjection({'visual': 4, 'acoustic': 3}, 6, kind)
    if kind == 'linear':
        with torch.no_grad():  # initialised to zero: make it count
            for lin in proj.lins.values():
                lin.bias.normal_()
    feats = _features()
    out = proj(feats)
    for m, x in feats.items():
        lin = proj.lins[m]
        if kind == 'linear':
            want = x @ lin.weight.t() + lin.bias
        else:
            assert lin.bias is None
            want = F.leaky_relu(x @ lin.weight.t(), 0.2)
        assert_close(out[m], want)
    assert repr(proj) == (f'ModalityProjection(visual=4, acoustic=3 -> 6, '
                          f'kind={kind})')


def test_features_of_another_dtype_are_cast_to_the_weights():
    # float64 (numpy's default) failed with a dtype error inside F.linear.
    proj = ModalityProjection({'visual': 4, 'acoustic': 3}, 6)
    out64 = proj(_features(torch.float64))
    out32 = proj(_features(torch.float32))
    for m in out32:
        assert out64[m].dtype == torch.float32
        assert_close(out64[m], out32[m])


def test_bad_input():
    with pytest.raises(ValueError, match="kind must be 'linear' or 'leaky', "
                       "got 'relu'"):
        ModalityProjection({'visual': 4}, 6, 'relu')
    with pytest.raises(ValueError, match='in_channels must name at least one'):
        ModalityProjection({}, 6)
    proj = ModalityProjection({'visual': 4, 'textual': 2}, 6)
    with pytest.raises(KeyError, match="features of modality 'textual' are "
                       "missing"):
        proj(_features())
