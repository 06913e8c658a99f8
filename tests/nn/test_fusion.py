import math

import pytest
import torch

from pyg_mmrec.nn.fusion import CrossModalAttention


def explicit_fusion(views, wq, wk, wcat, heads):
    num_views, num_nodes, d = views.shape
    dh = d // heads
    out = torch.zeros(num_nodes, d, dtype=views.dtype)
    # [node, head, query view, key view]
    attention = torch.zeros(num_nodes, heads, num_views, num_views,
                            dtype=views.dtype)
    for n in range(num_nodes):
        per_view = []
        for m in range(num_views):
            blocks = []
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                q = (views[m, n] @ wq)[sl]
                scores = torch.stack([
                    (q * (views[j, n] @ wk)[sl]).sum() / math.sqrt(dh)
                    for j in range(num_views)
                ])
                attn = torch.softmax(scores, dim=0)
                attention[n, h, m] = attn
                blocks.append(sum(attn[j] * views[j, n, sl]
                                  for j in range(num_views)))
            per_view.append(torch.cat(blocks) @ wcat)
        out[n] = torch.stack(per_view).mean(dim=0)
    return out, attention


def test_fusion_matches_per_head_math():
    torch.manual_seed(0)
    conv = CrossModalAttention(8, heads=4).double()
    views = torch.randn(3, 5, 8, dtype=torch.float64)
    ref, ref_attn = explicit_fusion(views, conv.weight_query,
                                    conv.weight_key, conv.weight_cat, 4)
    out, attn = conv(views, return_attention=True)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.allclose(attn, ref_attn, atol=1e-12)
    assert torch.allclose(conv(list(views)), ref, atol=1e-12)


def test_fusion_keys_use_their_own_weight():
    torch.manual_seed(1)
    conv = CrossModalAttention(4, heads=2)
    views = torch.randn(2, 3, 4)
    before = conv(views)
    with torch.no_grad():
        conv.weight_key.mul_(3.0)
    assert not torch.allclose(conv(views), before)


def test_fusion_bad_input_and_repr():
    with pytest.raises(ValueError, match='heads must be >= 1 and divide '
                       'channels, got channels=6, heads=4'):
        CrossModalAttention(6, heads=4)
    conv = CrossModalAttention(8)
    with pytest.raises(ValueError, match=r'views must be \[M, N, 8\], got '
                       r'\(2, 3, 5\)'):
        conv(torch.randn(2, 3, 5))
    assert repr(conv) == 'CrossModalAttention(8, heads=4)'
    conv.reset_parameters()


def test_fusion_sequence_of_views_matches_stacked_and_checks_shapes():
    torch.manual_seed(0)
    conv = CrossModalAttention(8)
    views = [torch.randn(5, 8) for _ in range(3)]
    assert torch.allclose(conv(views), conv(torch.stack(views)), atol=1e-6)
    with pytest.raises(ValueError, match=r'views must be M tensors of shape '
                       r'\[N, 8\], got shapes \[\(4, 8\), \(5, 8\)\]'):
        conv([torch.randn(5, 8), torch.randn(4, 8)])
    with pytest.raises(ValueError, match=r'got shapes \[\]'):
        conv([])
