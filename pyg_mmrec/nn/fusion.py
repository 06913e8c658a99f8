r"""Cross-modal fusion of per-modality node views (MMSSL)."""
import math
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Module, Parameter


class CrossModalAttention(Module):
    r"""Multi-head self-attention across modalities, from MMSSL.

    For :math:`M` views :math:`\mathbf{X}_m \in \mathbb{R}^{N \times d}` of
    the same nodes and :math:`H` heads of size :math:`d_h = d / H`, with
    :math:`\mathbf{X}_m^{(h)}` the :math:`h`-th column block of a matrix:

    .. math::
        a^{(h)}_{n, m, m'} &= \operatorname{softmax}_{m'} \Big(
        \frac{\langle (\mathbf{X}_m \mathbf{W}_q)^{(h)}_n,
        (\mathbf{X}_{m'} \mathbf{W}_k)^{(h)}_n \rangle}{\sqrt{d_h}} \Big) \\
        \mathbf{o}_{n, m} &= \Big\Vert_{h=1}^{H} \sum_{m'}
        a^{(h)}_{n, m, m'}\, (\mathbf{X}_{m'})^{(h)}_n \\
        \mathbf{y}_n &= \frac{1}{M} \sum_m \mathbf{o}_{n, m}\, \mathbf{W}_{cat}

    The values are the views themselves (no value projection); the keys use
    their own :math:`\mathbf{W}_k`. All three matrices are :math:`d \times d`
    with Xavier-uniform initialisation.

    Args:
        channels (int): Embedding size :math:`d`.
        heads (int): Number of heads :math:`H`; must divide :obj:`channels`
            (default: :obj:`4`).

    Shapes:
        - **input:** views :math:`(M, N, d)`, or :math:`M` tensors
          :math:`(N, d)`
        - **output:** fused embeddings :math:`(N, d)`, and with
          :obj:`return_attention` the attention weights :math:`(N, H, M, M)`
          (node, head, query view, key view)
    """
    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if heads < 1 or channels % heads != 0:
            raise ValueError(f'heads must be >= 1 and divide channels, got '
                             f'channels={channels}, heads={heads}')
        self.channels = channels
        self.heads = heads
        self.weight_query = Parameter(torch.empty(channels, channels))
        self.weight_key = Parameter(torch.empty(channels, channels))
        self.weight_cat = Parameter(torch.empty(channels, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for weight in (self.weight_query, self.weight_key, self.weight_cat):
            torch.nn.init.xavier_uniform_(weight)

    def forward(self, views: Union[Tensor, Sequence[Tensor]],
                return_attention: bool = False
                ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""
        Args:
            views (Tensor or Sequence[Tensor]): ``[M, N, d]`` (or a sequence
                of ``M`` tensors ``[N, d]``) views of the same ``N`` nodes.
            return_attention (bool): Also return the attention weights
                ``[N, H, M, M]``.

        Returns:
            ``[N, d]`` fused embeddings (and the attention weights).
        """
        # Per-view tensors, not one stacked [M, N, d]: selecting views out
        # of a stack costs a full-size zero gradient per selection.
        if isinstance(views, Tensor):
            if views.dim() != 3 or views.size(-1) != self.channels:
                raise ValueError(f'views must be [M, N, {self.channels}], '
                                 f'got {tuple(views.shape)}')
            views = views.unbind(0)
        views = list(views)
        shapes = sorted({tuple(view.shape) for view in views})
        if len(shapes) != 1 or len(shapes[0]) != 2 or \
                shapes[0][1] != self.channels:
            raise ValueError(f'views must be M tensors of shape [N, '
                             f'{self.channels}], got shapes {shapes}')
        num_views, num_nodes = len(views), views[0].size(0)
        dim = self.channels // self.heads
        shape = (num_nodes, self.heads, dim)
        query = [view.matmul(self.weight_query).view(shape) for view in views]
        key = [view.matmul(self.weight_key).view(shape) for view in views]
        value = [view.view(shape) for view in views]
        # M is a handful of modalities: one elementwise product per pair of
        # views beats a batched matmul over N * H tiny M x M problems.
        score = torch.stack([
            torch.stack([(q * k).sum(-1) for k in key], dim=-1)
            for q in query
        ], dim=-2) / math.sqrt(dim)  # [N, H, M, M]
        attn = score.softmax(dim=-1)
        # W_cat is linear, so the mean over query views can be taken before
        # it: the mean output is a sum of the values weighted by the
        # attention averaged over the query views.
        weight = attn.mean(dim=-2)  # [N, H, M]
        out = sum(weight[..., k, None] * value[k] for k in range(num_views))
        out = out.reshape(num_nodes, self.channels).matmul(self.weight_cat)
        return (out, attn) if return_attention else out

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, '
                f'heads={self.heads})')
