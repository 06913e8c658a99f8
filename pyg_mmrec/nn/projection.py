r"""Projection of raw item features into the embedding space."""
from typing import Dict, List, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear, Module, ModuleDict


class ModalityProjection(Module):
    r"""Projects each modality's raw item features :math:`\mathbf{F}_m` to
    the embedding size :math:`d`:

    .. math::
        f_m(\mathbf{F}_m) = \mathbf{F}_m \mathbf{W}_m + \mathbf{b}_m
        \quad \text{(linear)} \qquad \text{or} \qquad
        f_m(\mathbf{F}_m) = \mathrm{LeakyReLU}_{0.2}(\mathbf{F}_m
        \mathbf{W}_m) \quad \text{(leaky)}

    (DiffMM's ``trans=1`` and ``trans=0``). Weights are Xavier-uniform.

    Args:
        in_channels (Mapping[str, int]): Feature size per modality.
        out_channels (int): The embedding size :math:`d`.
        kind (str): ``'linear'`` or ``'leaky'``.

    Shapes:
        - **input:** a mapping from each modality :math:`m` to its item
          features :math:`(I, F_m)` (other modalities are ignored)
        - **output:** a mapping from each modality to :math:`(I, d)`
    """
    def __init__(self, in_channels: Mapping[str, int], out_channels: int,
                 kind: str = 'linear') -> None:
        super().__init__()
        if kind not in ('linear', 'leaky'):
            raise ValueError(f"kind must be 'linear' or 'leaky', got "
                             f"'{kind}'")
        if not in_channels:
            raise ValueError('in_channels must name at least one modality')
        self.kind = kind
        self.out_channels = out_channels
        self.lins = ModuleDict({
            m: Linear(c, out_channels, bias=kind == 'linear')
            for m, c in in_channels.items()
        })
        self.reset_parameters()

    @property
    def modalities(self) -> List[str]:
        r"""The modalities, in the order given at construction."""
        return list(self.lins.keys())

    def reset_parameters(self) -> None:
        for lin in self.lins.values():
            torch.nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)

    def forward(self, features: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        out = {}
        for m, lin in self.lins.items():
            if m not in features:
                raise KeyError(f"features of modality '{m}' are missing")
            # Features are data, not parameters: numpy's float64 (or the
            # float16 the data sets store) is cast to the weights' dtype.
            h = lin(features[m].to(lin.weight.dtype))
            out[m] = F.leaky_relu(h, 0.2) if self.kind == 'leaky' else h
        return out

    def __repr__(self) -> str:
        sizes = ', '.join(f'{m}={lin.in_features}'
                          for m, lin in self.lins.items())
        return (f'{self.__class__.__name__}({sizes} -> {self.out_channels}, '
                f'kind={self.kind})')
