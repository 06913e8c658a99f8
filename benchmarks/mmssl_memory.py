r"""Time and peak memory of one MMSSL training epoch at Amazon-Book size.

MMSSL's reference code builds dense users x items matrices, which at
Amazon-Book size (52,643 users x 91,599 items) are 19 GB each. The library's
MMSSL keeps memory at O(batch x items + edges): preference rows exist for the
batch users only, the generated graphs are rebuilt in user batches. This
script checks that on a synthetic data set of Amazon-Book size (two 64-d
modalities, generated directly with torch: no dense logits matrix) with the
scalable (projected) discriminator.

Example::

    python benchmarks/mmssl_memory.py --max-batches 20

With :obj:`--max-batches N` only the first N batches of the epoch are timed
and the epoch time is extrapolated (stated in the output as
``"extrapolated": true``); the graph regeneration of the epoch always runs in
full. Per-batch means (``seconds_per_batch``,
``seconds_discriminator_per_batch``) leave out the first, warm-up batch
(unless it is the only one timed). Prints JSON and writes
``mmssl_memory.json`` and a plot of the per-batch time and peak memory,
``mmssl_memory.png``, in the ``--out`` folder (``benchmarks/results`` by
default). Options and the output folder are checked before the data is
generated (and a drawn graph that leaves a user every item, with no
negative to sample, right after).
"""
import dataclasses
import json
import os.path as osp
import platform
import sys
import time
import warnings
from statistics import fmean

import torch
from torch import Tensor

warnings.filterwarnings('ignore', category=UserWarning)

from torch_geometric.data import HeteroData  # noqa: E402

from common import (device_name, distinct_pairs,  # noqa: E402
                    edge_count_problem, output_folder, peak_rss_gib,
                    positive_int, random_seed, thread_count, write_outputs)
from pyg_mmrec.data.sampling import BPRSampler  # noqa: E402
from pyg_mmrec.errors import (  # noqa: E402
    ConfigError,
    OneLineArgumentParser,
    exit_on_input_error,
)
from pyg_mmrec.nn.models.base import device_clock  # noqa: E402
from pyg_mmrec.nn.models.mmssl import MMSSLConfig, build_mmssl  # noqa: E402
from pyg_mmrec.train.run import resolve_device  # noqa: E402

HERE = osp.dirname(osp.abspath(__file__))
AMAZON_BOOK = dict(num_users=52_643, num_items=91_599, num_edges=2_984_108)
#: The files written in ``--out``.
OUTPUTS = ('mmssl_memory.json', 'mmssl_memory.png')


def synthetic_interactions(num_users: int, num_items: int, num_edges: int,
                           feature_dim: int = 64, seed: int = 0
                           ) -> HeteroData:
    r"""Exactly :obj:`num_edges` distinct user-item pairs with heavy-tailed
    user activity and item popularity (log-normal weights; near full
    density the last pairs are uniform, see :func:`common.distinct_pairs`),
    two random feature modalities; O(edges) memory."""
    gen = torch.Generator().manual_seed(seed)
    user_w = torch.exp(0.8 * torch.randn(num_users, generator=gen))
    item_w = torch.exp(1.0 * torch.randn(num_items, generator=gen))

    def draw(missing: int) -> Tensor:
        n = int(1.05 * missing) + 1024
        users = torch.multinomial(user_w, n, replacement=True, generator=gen)
        items = torch.multinomial(item_w, n, replacement=True, generator=gen)
        return users * num_items + items

    keys = distinct_pairs(num_users, num_items, num_edges, gen, draw)
    data = HeteroData()
    data['user'].num_nodes = num_users
    data['item'].num_nodes = num_items
    data['user', 'interacts', 'item'].edge_index = torch.stack(
        [keys // num_items, keys % num_items])
    for m in ('visual', 'acoustic'):
        data['item'][m] = torch.randn(num_items, feature_dim, generator=gen)
    return data


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--users', type=positive_int,
                        default=AMAZON_BOOK['num_users'],
                        help="users of the drawn graph (Amazon-Book's)")
    parser.add_argument('--items', type=positive_int,
                        default=AMAZON_BOOK['num_items'],
                        help="items of the drawn graph (Amazon-Book's)")
    parser.add_argument('--edges', type=positive_int,
                        default=AMAZON_BOOK['num_edges'],
                        help='distinct user-item pairs (at most users x '
                        'items)')
    parser.add_argument('--batch-size', type=positive_int, default=1024,
                        help='interactions per training batch')
    parser.add_argument('--max-batches', type=positive_int, default=None,
                        help='time only this many batches and extrapolate')
    parser.add_argument('--discriminator', default='projected',
                        choices=['projected', 'paper'],
                        help="MMSSLConfig.discriminator")
    parser.add_argument('--threads', type=thread_count, default=None,
                        help="CPU threads (default: torch's)")
    parser.add_argument('--device', type=device_name, default='cpu',
                        help="'cpu' (default), 'cuda', 'cuda:N' or 'auto'")
    parser.add_argument('--seed', type=random_seed, default=0,
                        help='random seed')
    parser.add_argument('--out', default=osp.join(HERE, 'results'),
                        help='output folder (default: benchmarks/results)')
    args = parser.parse_args()
    problem = edge_count_problem(args.users, args.items, args.edges)
    if problem:
        raise ConfigError(f'--edges: {problem}')
    output_folder(args.out, OUTPUTS)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == 'cuda'

    start = time.perf_counter()
    data = synthetic_interactions(args.users, args.items, args.edges,
                                  seed=args.seed)
    seconds_data = time.perf_counter() - start
    rss_data = peak_rss_gib()
    try:
        sampler = BPRSampler(data['user', 'interacts', 'item'].edge_index,
                             args.users, args.items, args.batch_size,
                             seed=args.seed)
    except ValueError as e:  # a dense draw gave a user every item
        raise ConfigError(f'--edges: {e}; use fewer edges') from None

    torch.manual_seed(args.seed)
    config = dataclasses.replace(MMSSLConfig(),
                                 discriminator=args.discriminator)
    model = build_mmssl(data, config, seed=args.seed).to(device)
    start = device_clock(device)
    data = model.prepare(data.to(device))
    seconds_prepare = device_clock(device) - start
    optimizer = model.configure_optimizer(5.5e-4)

    model.train()
    if cuda:
        # From here on, the training steps' own GPU memory: RSS on a GPU
        # run is mostly the CUDA context and host copies.
        torch.cuda.reset_peak_memory_stats(device)
    num_batches = len(sampler)
    timed = num_batches if args.max_batches is None else \
        min(args.max_batches, num_batches)
    # Epoch 1, so that before_epoch regenerates the graphs (epoch 0 trains
    # on the initial graphs R_m = R).
    start = device_clock(device)
    phases = model.before_epoch(data, epoch=1)
    step_start = device_clock(device)
    step_seconds, disc_seconds, rss_trace, cuda_trace = [], [], [], []
    last = step_start
    for b, (users, pos, neg) in enumerate(sampler.epoch(1)):
        if b >= timed:
            break
        batch = (users.to(device), pos.to(device), neg.to(device))
        parts = model.train_step(data, batch, optimizer)
        now = device_clock(device)
        step_seconds.append(now - last)
        disc_seconds.append(parts['seconds_discriminator'])
        rss_trace.append(peak_rss_gib())
        if cuda:
            cuda_trace.append(torch.cuda.max_memory_allocated(device) / 2**30)
        last = now
        if b % 50 == 0 or b + 1 == timed:
            print(f'batch {b + 1}/{timed}: {step_seconds[-1]:.2f} s, peak '
                  f'RSS {rss_trace[-1]:.2f} GiB', file=sys.stderr)
    seconds_steps = time.perf_counter() - step_start
    # The first step pays for lazy set-up (optimiser state, caches): both
    # means leave it out (unless it is the only one).
    steady = slice(1, None) if len(step_seconds) > 1 else slice(None)
    per_batch = fmean(step_seconds[steady])
    epoch_seconds = (phases['graph'] + seconds_steps if timed == num_batches
                     else phases['graph'] + step_seconds[0] +
                     per_batch * (num_batches - 1))
    result = {
        'users': args.users,
        'items': args.items,
        'edges': int(data['user', 'interacts', 'item'].edge_index.size(1)),
        'modalities': {m: int(data['item'][m].size(1))
                       for m in model.modalities},
        'discriminator': args.discriminator,
        'batch_size': args.batch_size,
        'batches_per_epoch': num_batches,
        'batches_timed': timed,
        'extrapolated': timed < num_batches,
        'seconds_data': seconds_data,
        'seconds_prepare': seconds_prepare,
        'seconds_graph_regeneration': phases['graph'],
        'seconds_per_batch': per_batch,
        'seconds_discriminator_per_batch': fmean(disc_seconds[steady]),
        'per_batch_means_over': (f'batches 2..{timed} (the first, warm-up '
                                 f'batch left out)' if timed > 1 else
                                 'batch 1 (the only one timed)'),
        'projected_rows': model.projected_rows,
        'batch_seconds': step_seconds,
        'batch_discriminator_seconds': disc_seconds,
        'batch_peak_rss_gib': rss_trace,
        'seconds_epoch': epoch_seconds,
        'peak_rss_gib_after_data': rss_data,
        'peak_rss_gib': peak_rss_gib(),
        'target_rss_gib': 8.0,
        'threads': torch.get_num_threads(),
        'device': str(device),
        'peak_cuda_gib': (torch.cuda.max_memory_allocated(device) / 2**30
                          if cuda else None),
        # Peak GPU memory of the epoch so far after each step (regeneration
        # included, preparation not); empty on CPU.
        'batch_peak_cuda_gib': cuda_trace,
        'cpu': platform.processor() or platform.machine(),
        'torch': torch.__version__,
        'command': ' '.join(sys.argv),
    }
    if result['extrapolated']:
        result['note'] = (f'epoch time extrapolated from {timed} of '
                          f'{num_batches} batches (first batch counted once, '
                          f'the rest at the mean of batches 2..{timed}); '
                          f'graph regeneration measured in full')
    text = json.dumps(result, indent=2)
    print(text)
    memory = (cuda_trace, f'peak {device} memory (GiB)') if cuda else \
        (rss_trace, 'peak RSS (GiB)')
    write_outputs(args.out, {
        'mmssl_memory.json': text,
        'mmssl_memory.png': lambda path: plot(step_seconds, disc_seconds,
                                              memory, num_batches,
                                              graph_label(result), path),
    })


def graph_label(result: dict) -> str:
    r"""``'Amazon-Book size'`` for the default sizes, else the sizes."""
    sizes = {'num_users': result['users'], 'num_items': result['items'],
             'num_edges': result['edges']}
    if sizes == AMAZON_BOOK:
        return 'Amazon-Book size'
    return (f"{result['users']:,} users x {result['items']:,} items x "
            f"{result['edges']:,} edges")


def plot(step_seconds, disc_seconds, memory, num_batches: int,
         graph: str, path: str) -> None:
    r"""Seconds per batch, and ``memory = (trace, label)`` per batch."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    batches = range(1, len(step_seconds) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(batches, step_seconds, label='batch')
    left.plot(batches, disc_seconds, label='discriminator part')
    left.set_xlabel('batch')
    left.set_ylabel('seconds')
    left.legend()
    right.plot(batches, memory[0])
    right.axhline(8.0, color='red', linestyle='--', label='8 GiB target')
    right.set_xlabel('batch')
    right.set_ylabel(memory[1])
    right.legend()
    timed = ('all' if len(step_seconds) == num_batches else
             f'the first {len(step_seconds)} of')
    fig.suptitle(f'MMSSL at {graph}: {timed} {num_batches} '
                 f'batches of an epoch')
    fig.tight_layout()
    # The path is a temporary name: say the format.
    fig.savefig(path, dpi=110, format='png')
    plt.close(fig)


if __name__ == '__main__':
    with exit_on_input_error('mmssl_memory.py'):
        main()
