import json
import math
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = ['--users', '120', '--items', '80', '--edges', '1500',
         '--batch-size', '256', '--threads', '1']


def run_mmssl_memory(out: str, *extra: str) -> dict:
    subprocess.run([sys.executable,
                    osp.join(ROOT, 'benchmarks', 'mmssl_memory.py'), *SMALL,
                    '--out', out, *extra], check=True, capture_output=True)
    with open(osp.join(out, 'mmssl_memory.json')) as f:
        return json.load(f)


@pytest.mark.parametrize('max_batches', [None, 2])
def test_mmssl_memory_epoch_is_measured_or_marked_extrapolated(
        tmp_path, max_batches):
    extra = [] if max_batches is None else ['--max-batches',
                                            str(max_batches)]
    result = run_mmssl_memory(str(tmp_path), *extra)
    assert result['device'] == 'cpu' and result['batch_peak_cuda_gib'] == []
    num_batches = math.ceil(1500 / 256)
    assert result['batches_per_epoch'] == num_batches
    assert result['edges'] == 1500
    steps = result['batch_seconds']
    assert len(result['batch_discriminator_seconds']) == len(steps)
    if max_batches is None:
        assert not result['extrapolated'] and 'note' not in result
        assert len(steps) == result['batches_timed'] == num_batches
        # Measured: regeneration plus the wall time of all batches.
        assert result['seconds_epoch'] >= (
            result['seconds_graph_regeneration'] + sum(steps) - 1e-6)
    else:
        assert result['extrapolated'] and 'extrapolated' in result['note']
        assert len(steps) == result['batches_timed'] == max_batches
        mean_rest = sum(steps[1:]) / len(steps[1:])
        assert result['seconds_epoch'] == pytest.approx(
            result['seconds_graph_regeneration'] + steps[0] +
            mean_rest * (num_batches - 1))
    assert result['device'] == 'cpu' and result['peak_cuda_gib'] is None
    assert 0 < result['peak_rss_gib_after_data'] <= result['peak_rss_gib']
    assert osp.getsize(tmp_path / 'mmssl_memory.png') > 0


def test_generated_graph_benchmark_reports_ratio_and_phases(
        make_dataset, tiny_features):
    rng = np.random.default_rng(0)
    num_users, num_items = 30, 40
    train = sorted({(int(u), int(rng.integers(num_items)))
                    for u in range(num_users) for _ in range(4)})
    splits = {'train': train, 'val': [(0, 5)], 'test': [(1, 6)]}
    root = make_dataset('diffmm', splits=splits,
                        features=tiny_features(num_items=num_items),
                        shapes={s: (num_users, num_items) for s in splits})
    out = subprocess.run(
        [sys.executable, osp.join(ROOT, 'benchmarks', 'generated_graph.py'),
         '--root', str(root), '--denoisers', '2', '--repeats', '1',
         '--screen-dtype', 'bfloat16', '--train-batch-size', '8'],
        check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert (result['num_users'], result['num_items']) == (30, 40)
    # ratio = build / train, up to the rounding of the three printed values.
    ratio, train = result['ratio'], result['train_pass_seconds']
    assert abs(ratio * train - result['graph_build_seconds']) <= (
        5e-5 * train + (ratio + 1) * 5e-4 + 1e-9)
    assert result['screen_dtype'] == 'bfloat16'
    phases = {'fold', 'hidden_steps', 'decode_topk'}
    assert set(result['build_phase_seconds']) == phases
    # The screened, hidden-space build is the literal process.
    assert result['fast_path_top_k_agreement_with_literal'] == 1.0


def test_spmm_backend_out_of_memory_is_skipped_not_fatal(monkeypatch):
    # One backend that does not fit on a GPU must not lose the others'
    # measurements (simulated on CPU).
    import argparse
    import importlib.util

    import torch
    monkeypatch.syspath_prepend(osp.join(ROOT, 'benchmarks'))
    spec = importlib.util.spec_from_file_location(
        'spmm_bench', osp.join(ROOT, 'benchmarks', 'spmm.py'))
    spmm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spmm)
    real = spmm.make_conv_out

    def make_conv_out(name, *args):
        if name == 'csr':
            raise torch.OutOfMemoryError('CUDA out of memory (simulated)')
        return real(name, *args)

    monkeypatch.setattr(spmm, 'make_conv_out', make_conv_out)
    args = argparse.Namespace(backends=['default', 'csr', 'coo'], dim=8,
                              max_memory_gb=None, max_seconds=5.0,
                              min_time=0.01, max_repeats=3,
                              peak_bandwidth=None)
    edge_index = torch.stack([torch.arange(30) % 10, torch.arange(30) % 7])
    rows = spmm.bench_graph('tiny', edge_index, 10, 7, args,
                            torch.device('cpu'), 1, {})
    by_backend = {(r['backend'], r['layers']): r['skipped'] for r in rows}
    assert by_backend[('csr', 1)] == by_backend[('csr', 3)] == \
        'out of memory on cpu'
    for backend in ('default', 'coo'):
        assert by_backend[(backend, 1)] is None
        assert by_backend[(backend, 3)] is None
