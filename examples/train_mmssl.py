r"""Train MMSSL with the library's Python API.

    python examples/train_mmssl.py --dataset ../shared/datasets/tiktok-dev \
        --preset tiktok --epochs 50

Equivalent to ``pyg-mmrec train --model mmssl --preset tiktok``; this
script spells out the pieces: data set, model, sampler, evaluator, loop.
MMSSL's adversarial recipe (a discriminator step with its own Adam, then a
generator step, per batch; the modality graphs regenerated every epoch) lives
in :meth:`MMSSL.train_step` and :meth:`MMSSL.before_epoch`, which the loop
calls.
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
from pyg_mmrec.nn.models.mmssl import MMSSL_PRESETS, MMSSLConfig
from pyg_mmrec.nn.models.mmssl import build_mmssl
from pyg_mmrec.train import TrainConfig, fit, resolve_device


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', default='synthetic',
                        help="'synthetic' (the default) or a data set folder")
    parser.add_argument('--preset', choices=sorted(MMSSL_PRESETS),
                        default='tiktok', help="the papers' hyper-parameters")
    parser.add_argument('--epochs', type=int, default=50,
                        help='epochs to train')
    parser.add_argument('--discriminator', choices=['projected', 'paper'],
                        default='projected',
                        help='MMSSLConfig.discriminator')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--device', default='auto',
                        help="'cpu', 'cuda', 'cuda:N' or 'auto'")
    args = parser.parse_args()
    device = resolve_device(args.device)

    # Options first (TrainConfig checks them), then the data.
    config = dataclasses.replace(MMSSLConfig(), **MMSSL_PRESETS[args.preset],
                                 discriminator=args.discriminator)
    # The paper: AdamW lr 5.5e-4, batch 1024, early stopping patience 7.
    train_config = TrainConfig(epochs=args.epochs, lr=5.5e-4, batch_size=1024,
                               patience=7, seed=args.seed)

    if args.dataset == 'synthetic':
        data = make_synthetic()
    else:
        data = MultiModalRecDataset(args.dataset)[0]

    torch.manual_seed(args.seed)
    model = build_mmssl(data, config, seed=args.seed).to(device)
    # P, Q and the initial modality graphs, on the device.
    data = model.prepare(data.to(device))
    print(model, file=sys.stderr)  # stdout is the JSON result

    sampler = BPRSampler(data['user', 'interacts', 'item'].edge_index,
                         model.num_users, model.num_items,
                         train_config.batch_size, seed=args.seed)
    state = fit(model, data, sampler,
                model.configure_optimizer(train_config.lr),
                RankingEvaluator(data), train_config)
    print(json.dumps({'best_epoch': state.best_epoch, 'val': state.best_val,
                      'test': state.best_test}, indent=2))


if __name__ == '__main__':
    with exit_on_input_error('train_mmssl.py'):
        main()
