r"""Benchmark: forward + backward time of user-item propagation per backend.

For every backend (PyG ``LGConv()`` on a plain ``edge_index`` as the
baseline, then :class:`pyg_mmrec.nn.conv.SymNormConv` on the adjacency that
:func:`pyg_mmrec.nn.sparse.to_adj` builds for ``scatter``, ``coo``, ``csr``,
``sparse_tensor``, ``edge_index`` and the library default ``auto``) it times
one propagation, :math:`\mathbf{X} + \mathbf{A}\mathbf{X}`, and the
LightGCN-style sum :math:`\sum_{l=0}^{3} \mathbf{A}^l \mathbf{X}`, forward
and backward, with
:math:`\mathbf{A}` the symmetric normalised user-item graph with self-loops.
The graphs are the TikTok training graph and synthetic uniform bipartite
graphs. CPU runs use one thread and all threads; on CUDA the achieved
memory bandwidth is reported as a fraction of the device's peak.

Prints one JSON object and writes ``spmm.json``, ``spmm.png`` (bar plot)
and ``spmm.md`` (the markdown tables of ``benchmarks/README.md``) in the
``--out`` folder, ``benchmarks/results`` by default: all three or none.
Options are checked, and the output folder tried, before anything is timed.

    python benchmarks/spmm.py                      # --quick (a few minutes)
    python benchmarks/spmm.py --sizes 1000000x200000x20000000 --threads 1
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

import torch_geometric
import torch_geometric.typing
from torch_geometric.nn import LGConv

from common import (TIKTOK_ROOT, device_name, distinct_pairs,
                    edge_count_problem, non_negative_float, output_folder,
                    positive_float, positive_int, write_outputs)
from pyg_mmrec.errors import (
    ConfigError,
    DatasetError,
    OneLineArgumentParser,
    exit_on_input_error,
    is_out_of_memory,
)
from pyg_mmrec.graph import sym_norm_bipartite
from pyg_mmrec.nn.conv.sym_norm_conv import SymNormConv
from pyg_mmrec.nn.models.base import device_clock
from pyg_mmrec.nn.sparse import DEFAULT_BACKEND, to_adj
from pyg_mmrec.train.run import resolve_device

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')

#: Backends in report order: (name, to_adj backend or None for the baseline).
BACKENDS: List[Tuple[str, Optional[str]]] = [
    ('lgconv_plain', None),
    ('scatter', 'scatter'),
    ('coo', 'coo'),
    ('csr', 'csr'),
    ('sparse_tensor', 'sparse_tensor'),
    ('edge_index', 'edge_index'),
    ('default', 'auto'),
]

#: Peak DRAM bandwidth in GB/s by device-name substring (the longest
#: matching substring wins, so 'GH200' is not read as 'H200').
PEAK_BANDWIDTH_GBS: List[Tuple[str, float]] = [
    ('H200', 4800.), ('GH200', 4000.), ('H100 NVL', 3900.),
    ('H100 PCIe', 2000.), ('H100', 3350.), ('H800 PCIe', 2000.),
    ('H800', 3350.), ('A100-SXM4-80GB', 2039.), ('A100 80GB PCIe', 1935.),
    ('A100', 1555.), ('A800 80GB PCIe', 1935.), ('A800', 2039.),
    ('L40S', 864.), ('L40', 864.),
    ('L4', 300.), ('A10G', 600.), ('A10', 600.), ('V100', 900.),
    ('T4', 320.), ('RTX 4090', 1008.), ('RTX 3090', 936.),
    ('B200', 8000.), ('MI300X', 5300.),
]

# How many float32 [nnz, d] message tensors the scatter path holds at once
# in forward + backward.
SCATTER_COPIES = 4


#: The files written in ``--out``.
OUTPUTS = ('spmm.json', 'spmm.png', 'spmm.md')


def parse_size(text: str) -> Tuple[int, int, int]:
    r"""``USERSxITEMSxEDGES`` (``1e6`` notation allowed): three integers
    :math:`\geq 1`, with no more edges than user-item pairs."""
    parts = text.lower().split('x')
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v >= 1
                                   and v.is_integer() for v in values):
        raise argparse.ArgumentTypeError(
            f"must be USERSxITEMSxEDGES, three integers >= 1, e.g. "
            f"100000x20000x1000000 (got '{text}')")
    users, items, edges = (int(v) for v in values)
    problem = edge_count_problem(users, items, edges)
    if problem:
        raise argparse.ArgumentTypeError(f"'{text}': {problem}")
    return users, items, edges


def backend_list(text: str) -> List[str]:
    r"""Comma-separated names of :data:`BACKENDS` (each once)."""
    known = [name for name, _ in BACKENDS]
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(known)}" if unknown else
            f"no backend named; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def thread_list(text: str) -> List[int]:
    r"""Comma-separated CPU thread counts :math:`\geq 1` or ``'all'``
    (every core), each once."""
    counts = []
    for t in text.split(','):
        n = (os.cpu_count() or 1) if t.strip() == 'all' else None
        if n is None and t.strip().isdigit() and int(t) >= 1:
            n = int(t)
        if n is None:
            raise argparse.ArgumentTypeError(
                f"must be thread counts >= 1 or 'all', separated by "
                f"commas, e.g. '1,all' (got '{text}')")
        counts.append(n)
    return list(dict.fromkeys(counts))


def synthetic_edges(num_users: int, num_items: int, num_edges: int,
                    seed: int = 0) -> Tensor:
    r"""``num_edges`` distinct uniform random user-item pairs (sorted)."""
    key = distinct_pairs(num_users, num_items, num_edges,
                         torch.Generator().manual_seed(seed))
    return torch.stack([key // num_items, key % num_items])


def tiktok_edges(root: str) -> Tuple[Tensor, int, int]:
    from pyg_mmrec.data import MultiModalRecDataset
    from pyg_mmrec.data.hetero import INTERACTS, num_users_items
    data = MultiModalRecDataset(root)[0]
    num_users, num_items = num_users_items(data)
    return data[INTERACTS].edge_index, num_users, num_items


def spmm_bytes(num_nodes: int, nnz: int, dim: int, index_bytes: int = 4,
               value_bytes: int = 4, feat_bytes: int = 4) -> int:
    r"""Bytes one CSR SpMM must move at least: row pointer and column
    indices, values, the gathered feature rows (one per non-zero) and the
    output."""
    return ((num_nodes + 1 + nnz) * index_bytes + nnz * value_bytes +
            nnz * dim * feat_bytes + num_nodes * dim * feat_bytes)


def peak_bandwidth(device: torch.device,
                   override: Optional[float]) -> Optional[float]:
    if override is not None:
        return override
    if device.type != 'cuda':
        return None
    return bandwidth_of(torch.cuda.get_device_name(device))


def bandwidth_of(name: str) -> Optional[float]:
    r"""The peak bandwidth of the GPU called :obj:`name` (GB/s), from its
    most specific entry in :data:`PEAK_BANDWIDTH_GBS`, or :obj:`None`."""
    matches = [(len(key), gbs) for key, gbs in PEAK_BANDWIDTH_GBS
               if key in name]
    return max(matches)[1] if matches else None


def memory_limit_gb(device: torch.device, explicit: Optional[float]) -> float:
    r"""Memory the scatter paths' ``[nnz, d]`` messages may take: the
    explicit ``--max-memory-gb``, else half of the device's memory (the
    GPU's for CUDA, the host's for CPU)."""
    if explicit is not None:
        return explicit
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[1] / 2**30 / 2
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**31


def time_fn(fn: Callable[[], None], device: torch.device, min_time: float,
            max_repeats: int, budget: float) -> Dict[str, Any]:
    r"""Median and min wall time (and, on CPU, median process CPU time) of
    :obj:`fn` after one warm-up call; stops early once the time budget is
    used up."""
    t0 = device_clock(device)
    fn()
    warm = device_clock(device) - t0
    times: List[float] = []
    cpu_times: List[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(device_clock(device) - t0)
        cpu_times.append(time.process_time() - c0)
        spent = time.perf_counter() - start
        if len(times) >= 3 and spent >= min_time:
            break
        if spent + warm > budget:
            break
    return {
        # (Of an even count, the mean of the middle two, not the slower.)
        'ms_median': 1e3 * statistics.median(times),
        'ms_min': 1e3 * min(times),
        # CPU time of the process (all threads): less sensitive than wall
        # time to other programs competing for the cores. On CUDA it is the
        # host spinning in the synchronisation, i.e. wall time: left out.
        'cpu_ms_median': (1e3 * statistics.median(cpu_times)
                          if device.type == 'cpu' else None),
        'repeats': len(times),
        'ms_warmup': 1e3 * warm,
    }


def predicted_skip(rate: Optional[float], nnz: int, dim: int, layers: int,
                   max_seconds: float) -> Optional[str]:
    r"""A skip reason if the time per (non-zero x channel x layer) measured
    so far predicts more than :obj:`max_seconds` for one step."""
    if rate is None:
        return None
    predicted = rate * nnz * dim * layers
    if predicted <= max_seconds:
        return None
    return (f'predicted {predicted:.3g} s per {layers}-layer step > '
            f'--max-seconds {max_seconds}')


def make_step(name: str, adj: Any, weight: Optional[Tensor], x: Tensor,
              grad: Tensor, layers: int) -> Callable[[], None]:
    conv = LGConv() if name == 'lgconv_plain' else SymNormConv()

    def step() -> None:
        x.grad = None
        h = out = x
        for _ in range(layers):
            h = conv(h, adj, weight)
            out = out + h
        out.backward(grad)

    return step


def bench_graph(label: str, edge_index: Tensor, num_users: int,
                num_items: int, args: argparse.Namespace,
                device: torch.device, threads: Optional[int],
                rate: Dict[str, float]) -> List[Dict[str, Any]]:
    r"""All backends on one graph for one device / thread setting."""
    num_nodes = num_users + num_items
    dim = args.dim
    base = {
        'graph': label, 'num_users': num_users, 'num_items': num_items,
        'num_edges': edge_index.size(1), 'dim': dim,
        # nnz(A): sym_norm_bipartite's edges both ways plus a self-loop
        # per node.
        'nnz': 2 * edge_index.size(1) + num_nodes,
        'device': str(device),
        'threads': threads if device.type == 'cpu' else None,
        # Features that fit in the GPU's L2 cache are gathered from there,
        # not from DRAM: fraction_of_peak is then an effective figure that
        # can exceed 1.
        'features_fit_in_l2': (
            num_nodes * dim * 4 <=
            torch.cuda.get_device_properties(device).L2_cache_size
            if device.type == 'cuda' else None),
    }

    def skipped(name: str, reason: str,
                layers: Iterable[int] = (1, 3)) -> List[Dict[str, Any]]:
        return [{**base, 'backend': name, 'layers': n, 'skipped': reason}
                for n in layers]

    try:
        full_index, full_weight = sym_norm_bipartite(edge_index, num_users,
                                                     num_items)
        full_index = full_index.to(device)
        full_weight = full_weight.to(device)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(num_nodes, dim, generator=gen).to(device)
        x.requires_grad_()
        grad = torch.randn(num_nodes, dim, generator=gen).to(device)
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        # Not even the graph and features fit: every backend is skipped,
        # the other graphs and devices are still measured.
        print(f'  {label:>24s} {str(device):>5s} out of memory for the '
              f'graph and features', file=sys.stderr, flush=True)
        # (Dropped first, so that empty_cache can return their blocks.)
        full_index = full_weight = x = grad = None
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        return [row for name, _ in BACKENDS if name in args.backends
                for row in skipped(name, f'out of memory on {device} (graph '
                                         f'and features)')]
    nnz = base['nnz']
    peak = peak_bandwidth(device, args.peak_bandwidth)
    reference: Optional[Tensor] = None
    rows: List[Dict[str, Any]] = []
    for name, backend in BACKENDS:
        if name not in args.backends:
            continue
        skip = None
        if (backend == 'sparse_tensor'
                and not torch_geometric.typing.WITH_TORCH_SPARSE):
            skip = 'torch-sparse is not installed'
        elif name in ('lgconv_plain', 'scatter'):
            need = SCATTER_COPIES * nnz * dim * 4 / 2**30
            limit = memory_limit_gb(device, args.max_memory_gb)
            if need > limit:
                skip = (f'needs ~{need:.3g} GiB for [nnz, d] messages '
                        f'> {limit:.3g} GiB (--max-memory-gb)')
        key = f'{name}/{device}/{threads}'
        if skip is None:
            skip = predicted_skip(rate.get(key), nnz, dim, 1,
                                  args.max_seconds)
        if skip is not None:
            rows.extend(skipped(name, skip))
            continue

        adj = weight = None
        try:
            t0 = device_clock(device)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                if backend is None:
                    # The baseline normalises inside LGConv on every call.
                    adj, weight = full_index, None
                else:
                    adj, weight = to_adj(full_index, full_weight, num_nodes,
                                         backend=backend, symmetric=True)
                setup_ms = 1e3 * (device_clock(device) - t0)

                # Same numbers as the default path (checked once, forward
                # only).
                with torch.no_grad():
                    out = make_conv_out(name, adj, weight, x)
                if reference is None:
                    reference = out
                max_diff = float((out - reference).abs().max())

                for layers in (1, 3):
                    skip = predicted_skip(rate.get(key), nnz, dim, layers,
                                          args.max_seconds)
                    if skip is not None:
                        rows.extend(skipped(name, skip, [layers]))
                        continue
                    step = make_step(name, adj, weight, x, grad, layers)
                    timing = time_fn(step, device, args.min_time,
                                     args.max_repeats, args.max_seconds)
                    sec = timing['ms_median'] / 1e3
                    rate[key] = sec / (nnz * dim * layers)
                    moved = 2 * layers * spmm_bytes(num_nodes, nnz, dim)
                    row = {**base, 'backend': name,
                           'adj_type': type(adj).__name__, 'layers': layers,
                           'setup_ms': setup_ms, **timing,
                           'max_abs_diff_vs_first': max_diff,
                           'spmm_bytes': moved,
                           'gb_per_s': moved / sec / 1e9,
                           'peak_gb_per_s': peak,
                           'fraction_of_peak': (moved / sec / 1e9 / peak
                                                if peak else None),
                           'skipped': None}
                    rows.append(row)
                    print(f"  {label:>24s} {str(device):>5s} "
                          f"threads={threads} {name:>13s} L={layers} "
                          f"{timing['ms_median']:10.2f} ms", file=sys.stderr,
                          flush=True)
        except (MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            # One backend that does not fit must not lose the others (on
            # CPU the allocator raises a RuntimeError, on CUDA
            # torch.OutOfMemoryError, a subclass).
            done = {r['layers'] for r in rows if r['backend'] == name}
            rows.extend(skipped(name, f'out of memory on {device}',
                                [n for n in (1, 3) if n not in done]))
            print(f'  {label:>24s} {str(device):>5s} {name:>13s} out '
                  f'of memory', file=sys.stderr, flush=True)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
        del adj, weight
    # Ratio of every backend to the LGConv baseline of the same setting.
    for layers in (1, 3):
        base_ms = next((r['ms_median'] for r in rows
                        if r['backend'] == 'lgconv_plain'
                        and r['layers'] == layers and not r['skipped']),
                       None)
        for r in rows:
            if r['layers'] == layers and not r['skipped'] and base_ms:
                r['speedup_vs_lgconv_plain'] = base_ms / r['ms_median']
    return rows


def make_conv_out(name: str, adj: Any, weight: Optional[Tensor],
                  x: Tensor) -> Tensor:
    conv = LGConv() if name == 'lgconv_plain' else SymNormConv()
    return conv(x, adj, weight)


def markdown_table(results: List[Dict[str, Any]]) -> str:
    r"""One markdown table per graph and device setting: median wall time
    (and process CPU time) per backend, and the ratio to the baseline."""
    lines: List[str] = []
    settings = []
    for r in results:
        s = (r['graph'], r['device'], r['threads'])
        if s not in settings:
            settings.append(s)
    for graph, device, threads in settings:
        where = device if threads is None else f'{device}, {threads} thread(s)'
        rows = [r for r in results if (r['graph'], r['device'],
                                       r['threads']) == (graph, device,
                                                         threads)]
        nnz = next((r['nnz'] for r in rows if 'nnz' in r), None)
        lines += [f'**{graph}** ({where}, nnz(A) = {nnz}, d = '
                  f"{rows[0].get('dim')})", '',
                  '| backend | 1 layer [ms] | 3 layers [ms] | 3 layers CPU '
                  '[ms] | 3 layers vs lgconv_plain |',
                  '|---|---:|---:|---:|---:|']
        for name, _ in BACKENDS:
            cells = []
            by_layers = {r['layers']: r for r in rows if r['backend'] == name}
            if not by_layers:
                continue
            if by_layers[1].get('skipped'):
                lines.append(f"| {name} | skipped: {by_layers[1]['skipped']}"
                             f' | | | |')
                continue
            cells.append(f"{by_layers[1]['ms_median']:.1f}")
            if by_layers[3].get('skipped'):
                cells += [f"skipped: {by_layers[3]['skipped']}", '', '']
            else:
                cells.append(f"{by_layers[3]['ms_median']:.1f}")
                cpu_ms = by_layers[3]['cpu_ms_median']
                cells.append('-' if cpu_ms is None else f'{cpu_ms:.1f}')
                ratio = by_layers[3].get('speedup_vs_lgconv_plain')
                cells.append(f'{ratio:.2f}x' if ratio else '-')
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines.append('')
    return '\n'.join(lines)


def plot(results: List[Dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    settings = []
    for r in results:
        s = (r['graph'], r['device'], r['threads'])
        if s not in settings:
            settings.append(s)
    names = [n for n, _ in BACKENDS]
    fig, axes = plt.subplots(1, len(settings),
                             figsize=(4.2 * len(settings), 4.2),
                             squeeze=False)
    for ax, (graph, device, threads) in zip(axes[0], settings):
        for k, layers in enumerate((1, 3)):
            vals = []
            for n in names:
                r = next((r for r in results if r['graph'] == graph
                          and r['device'] == device and r['threads'] == threads
                          and r['backend'] == n and r['layers'] == layers),
                         None)
                vals.append(r['ms_median'] if r and not r['skipped']
                            else float('nan'))
            pos = [i + (k - 0.5) * 0.4 for i in range(len(names))]
            ax.bar(pos, vals, width=0.4, label=f'{layers} layer(s)')
        ax.set_yscale('log')
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
        where = device if threads is None else f'{device}, {threads} thr'
        ax.set_title(f'{graph}\n{where}', fontsize=9)
        ax.set_ylabel('forward + backward [ms]')
        ax.legend(fontsize=7)
    fig.tight_layout()
    # The path is a temporary name: say the format.
    fig.savefig(path, dpi=110, format='png')
    plt.close(fig)


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=None,
                        help='TikTok data set (default: the shared one, '
                        'skipped if missing; a folder given here must '
                        'exist)')
    parser.add_argument('--no-tiktok', action='store_true',
                        help='skip the TikTok graph')
    parser.add_argument('--sizes', type=parse_size, nargs='*', default=None,
                        help='synthetic USERSxITEMSxEDGES graphs (default '
                        'with --quick: 100000x20000x1000000; full: up to '
                        '1000000x200000x20000000)')
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument('--full', action='store_true',
                       help='all synthetic sizes up to 1M x 200k x 20M')
    scale.add_argument('--quick', action='store_true',
                       help='TikTok + one small synthetic (the default, '
                       'named for scripts that say which they run)')
    parser.add_argument('--dim', type=positive_int, default=64,
                        help='embedding size')
    parser.add_argument('--threads', type=thread_list, default='1,all',
                        help="CPU thread counts, e.g. '1,all'")
    parser.add_argument('--device', type=device_name, default='auto',
                        help="'cpu', 'cuda', 'cuda:N' or 'auto' (CPU, plus "
                        "CUDA if present)")
    parser.add_argument('--backends', type=backend_list,
                        default=','.join(n for n, _ in BACKENDS),
                        help='comma-separated, from: ' +
                        ', '.join(n for n, _ in BACKENDS) + ' (default: all)')
    parser.add_argument('--min-time', type=non_negative_float, default=1.0,
                        help='seconds of timed repeats per measurement')
    parser.add_argument('--max-repeats', type=positive_int, default=30,
                        help='timed repeats at most per measurement')
    parser.add_argument('--max-seconds', type=positive_float, default=60.0,
                        help='skip a measurement whose predicted step time '
                        'exceeds this')
    parser.add_argument('--max-memory-gb', type=positive_float, default=None,
                        help='skip scatter-style backends needing more GiB '
                        "(2**30 bytes) than this (default: half the "
                        "device's memory: the GPU's for CUDA, the host's "
                        "for CPU)")
    parser.add_argument('--peak-bandwidth', type=positive_float,
                        default=None,
                        help='device peak bandwidth in GB/s (CUDA: from a '
                        'table of known devices)')
    parser.add_argument('--out', default=RESULTS,
                        help='folder of spmm.json, spmm.png and spmm.md '
                        '(default: benchmarks/results)')
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = ([(100_000, 20_000, 1_000_000),
                       (300_000, 60_000, 5_000_000),
                       (1_000_000, 200_000, 20_000_000)]
                      if args.full else [(100_000, 20_000, 1_000_000)])

    devices = []
    if args.device == 'auto':
        devices.append(torch.device('cpu'))
        if torch.cuda.is_available():
            devices.append(torch.device('cuda'))
    else:
        devices.append(resolve_device(args.device))
    # Only the default location may be absent (a checkout without the
    # shared data); a folder the user named must be there.
    root = TIKTOK_ROOT if args.root is None else args.root
    missing = not os.path.isdir(root)
    if missing and not args.no_tiktok and args.root is not None:
        problem = ('is a file, not a data set folder' if os.path.exists(root)
                   else 'data set folder not found')
        raise DatasetError(root, f'{problem} (--root; pass --no-tiktok to '
                           f'leave TikTok out)')
    use_tiktok = not (args.no_tiktok or missing)
    if not use_tiktok and not args.sizes:
        raise ConfigError('nothing to measure: TikTok is left out ('
                          + ('--no-tiktok' if args.no_tiktok else
                             f'{root} not found') + ') and --sizes is empty')
    output_folder(args.out, OUTPUTS)

    graphs: List[Tuple[str, Tensor, int, int]] = []
    skipped_graphs = []
    if use_tiktok:
        ei, u, i = tiktok_edges(root)
        graphs.append(('tiktok', ei, u, i))
    elif not args.no_tiktok:
        skipped_graphs.append({'graph': 'tiktok',
                               'skipped': f'{root} not found'})
    for u, i, e in args.sizes:
        graphs.append((f'synthetic_{u}x{i}x{e}', synthetic_edges(u, i, e),
                       u, i))

    results: List[Dict[str, Any]] = []
    rate: Dict[str, float] = {}
    default_threads = torch.get_num_threads()
    for label, ei, u, i in graphs:
        for device in devices:
            for threads in (args.threads if device.type == 'cpu' else
                            [None]):
                if threads is not None:
                    torch.set_num_threads(threads)
                results += bench_graph(label, ei, u, i, args, device,
                                       threads, rate)
                torch.set_num_threads(default_threads)

    report = {
        'benchmark': 'spmm',
        'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        # Allocator and threading settings change the numbers a lot.
        'env': {k: v for k, v in sorted(os.environ.items())
                if k.startswith(('MALLOC_', 'OMP_', 'MKL_'))},
        'default_backend': DEFAULT_BACKEND,
        'versions': {
            'python': platform.python_version(),
            'torch': torch.__version__,
            'torch_geometric': torch_geometric.__version__,
            'torch_sparse': torch_geometric.typing.WITH_TORCH_SPARSE,
            'torch_scatter': torch_geometric.typing.WITH_TORCH_SCATTER,
        },
        'machine': {
            'cpu': platform.processor() or platform.machine(),
            'cpu_count': os.cpu_count(),
            # The CUDA device measured (device 0 on a CPU-only run).
            'cuda': next((torch.cuda.get_device_name(d) for d in devices
                          if d.type == 'cuda'),
                         torch.cuda.get_device_name(0)
                         if torch.cuda.is_available() else None),
        },
        'method': ('median wall time of forward + backward (out.backward('
                   'random grad)) after one warm-up; gb_per_s counts the '
                   'bytes a CSR SpMM must move (indices, values, one '
                   'gathered row per non-zero, output) for 2 SpMMs per '
                   'layer (forward and backward), whatever the backend '
                   'actually moves'),
        'skipped_graphs': skipped_graphs,
        'results': results,
    }
    text = json.dumps(report, indent=1)
    write_outputs(args.out, {
        'spmm.json': text,
        'spmm.png': lambda path: plot(results, path),
        'spmm.md': markdown_table(results),
    })
    print(text)


if __name__ == '__main__':
    with exit_on_input_error('spmm.py'):
        main()
