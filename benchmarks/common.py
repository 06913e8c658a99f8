r"""Helpers shared by the benchmark scripts (run as ``python
benchmarks/<script>.py``, which puts this folder on the import path)."""
import os.path as osp
import resource

#: The TikTok data set beside the checkout (``../shared``).
TIKTOK_ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '..',
                       'shared', 'datasets', 'tiktok-dev')


def peak_rss_gib() -> float:
    r"""The process's peak resident set size in GiB."""
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
