r"""Message-passing layers; each takes a plain ``edge_index`` (scatter path)
or a sparse adjacency (fused SpMM path)."""
from pyg_mmrec.nn.conv.sym_norm_conv import SymNormConv
from pyg_mmrec.nn.conv.one_sided_norm_conv import OneSidedNormConv
from pyg_mmrec.nn.conv.modality_aware_conv import ModalityAwareConv

__all__ = ['SymNormConv', 'OneSidedNormConv', 'ModalityAwareConv']
