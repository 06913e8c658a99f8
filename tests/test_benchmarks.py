import json
import math
import os.path as osp
import subprocess
import sys

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
