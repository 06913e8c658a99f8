r"""Train DiffMM with the library's Python API.

    python examples/train_diffmm.py --dataset ../shared/datasets/tiktok-dev \
        --preset tiktok --epochs 11

Equivalent to ``pyg-mmrec train --model diffmm --preset tiktok``; this
script spells out the pieces: data set, model, sampler, evaluator, loop.
"""
import dataclasses
import json
import sys

import torch

from pyg_mmrec.data import MultiModalRecDataset
from pyg_mmrec.data.sampling import BPRSampler
from pyg_mmrec.data.synthetic import make_synthetic
from pyg_mmrec.errors import OneLineArgumentParser, exit_on_input_error
from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.nn.models.diffmm import DIFFMM_PRESETS, DiffMMConfig
from pyg_mmrec.nn.models.diffmm import build_diffmm
from pyg_mmrec.train import TrainConfig, fit, resolve_device
from pyg_mmrec.train.registry import get_spec


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='synthetic',
                        help="'synthetic' (the default) or a data set folder")
    parser.add_argument('--preset', choices=sorted(DIFFMM_PRESETS),
                        default='tiktok', help="the papers' hyper-parameters")
    parser.add_argument('--epochs', type=int, default=11,
                        help='epochs to train')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--device', default='auto',
                        help="'cpu', 'cuda', 'cuda:N' or 'auto'")
    args = parser.parse_args()
    device = resolve_device(args.device)

    # Options first (TrainConfig checks them), then the data.
    config = dataclasses.replace(DiffMMConfig(), **DIFFMM_PRESETS[args.preset])
    # The paper's recipe (learning rate, batch size, no early stopping), as
    # the command line uses it.
    recipe = get_spec('diffmm').train_presets[args.preset]
    train_config = TrainConfig(**{**recipe, 'epochs': args.epochs,
                                  'seed': args.seed})

    if args.dataset == 'synthetic':
        data = make_synthetic()
    else:
        data = MultiModalRecDataset(args.dataset)[0]

    torch.manual_seed(args.seed)
    model = build_diffmm(data, config, seed=args.seed).to(device)
    # The normalised A and the first generated graphs, on the device.
    data = model.prepare(data.to(device))
    print(model, file=sys.stderr)  # stdout is the JSON result

    sampler = BPRSampler(data['user', 'interacts', 'item'].edge_index,
                         model.num_users, model.num_items,
                         train_config.batch_size, seed=args.seed)
    optimizer = model.configure_optimizer(train_config.lr)
    state = fit(model, data, sampler, optimizer, RankingEvaluator(data),
                train_config)
    print(json.dumps({'best_epoch': state.best_epoch, 'val': state.best_val,
                      'test': state.best_test}, indent=2))


if __name__ == '__main__':
    with exit_on_input_error('train_diffmm.py'):
        main()
