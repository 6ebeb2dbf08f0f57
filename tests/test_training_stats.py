"""torch_utils.training_stats: counts, means and standard deviations of reported values, across processes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dnnlib
from torch_utils import training_stats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Statistics are process-global, so every test uses names under its own prefix.


def test_mean_and_std_match_numpy_over_mixed_reports():
    reports = [1.5, [2.0, -3.0], np.array([[0.25, 4.0], [7.0, -1.0]]), torch.tensor([10.0, 0.0, 2.5]),
               torch.tensor(3, dtype=torch.int64), torch.tensor([True, False])]
    collector = training_stats.Collector(regex=r'mixed/.*')
    for value in reports:
        training_stats.report('mixed/x', value)
    collector.update()
    flat = np.concatenate([np.asarray(torch.as_tensor(v), dtype=np.float64).ravel() for v in reports])
    assert collector.num('mixed/x') == flat.size == 13
    assert collector.mean('mixed/x') == pytest.approx(flat.mean(), abs=1e-12)
    assert collector.std('mixed/x') == pytest.approx(flat.std(), abs=1e-12)  # population std, as official
    assert collector['mixed/x'] == collector.mean('mixed/x')


def test_report_returns_its_argument_and_ignores_autograd():
    value = torch.tensor([1.0, 2.0], requires_grad=True) * 2
    assert training_stats.report('grad/x', value) is value
    assert training_stats.report0('grad/y', 5) == 5


def test_sums_are_float64():
    collector = training_stats.Collector(regex=r'precision/.*')
    training_stats.report('precision/x', 16777217)  # 2**24 + 1 is not representable in float32
    collector.update()
    assert collector.mean('precision/x') == 16777217.0


def test_values_reported_before_the_collector_exists_are_not_counted():
    training_stats.report('before/x', [100.0, 200.0])
    collector = training_stats.Collector(regex=r'before/.*')
    training_stats.report('before/x', 1.0)
    collector.update()
    assert collector.num('before/x') == 1 and collector.mean('before/x') == 1.0


def test_each_update_describes_the_values_since_the_previous_one():
    collector = training_stats.Collector(regex=r'between/.*')
    training_stats.report('between/x', 5.0)
    collector.update()
    training_stats.report('between/x', [1.0, 3.0])
    assert collector.mean('between/x') == 5.0  # nothing changes until update()
    collector.update()
    assert collector.num('between/x') == 2 and collector.mean('between/x') == 2.0 and collector.std('between/x') == 1.0


def test_keep_previous_keeps_a_silent_statistic_or_clears_it():
    keeping = training_stats.Collector(regex=r'keep/.*', keep_previous=True)
    clearing = training_stats.Collector(regex=r'keep/.*', keep_previous=False)
    training_stats.report('keep/x', [2.0, 4.0])
    training_stats.report('keep/y', 1.0)
    keeping.update()
    clearing.update()
    training_stats.report('keep/y', 7.0)  # only y gets new values
    keeping.update()
    clearing.update()
    assert keeping.num('keep/x') == 2 and keeping.mean('keep/x') == 3.0
    assert clearing.num('keep/x') == 0 and np.isnan(clearing.mean('keep/x')) and np.isnan(clearing.std('keep/x'))
    assert keeping.mean('keep/y') == clearing.mean('keep/y') == 7.0


def test_collectors_are_independent():
    fast = training_stats.Collector(regex=r'indep/.*')
    slow = training_stats.Collector(regex=r'indep/.*')
    training_stats.report('indep/x', 1.0)
    fast.update()
    training_stats.report('indep/x', 3.0)
    fast.update()
    slow.update()
    assert fast.num('indep/x') == 1 and fast.mean('indep/x') == 3.0
    assert slow.num('indep/x') == 2 and slow.mean('indep/x') == 2.0


def test_regex_must_match_the_whole_name():
    collector = training_stats.Collector(regex=r'Loss/.*')
    for name in ('Loss/G/loss', 'Loss/D/loss', 'XLoss/G', 'Progress/kimg'):
        training_stats.report(name, 1.0)
    collector.update()
    names = collector.names()
    assert 'Loss/G/loss' in names and 'Loss/D/loss' in names
    assert 'XLoss/G' not in names and 'Progress/kimg' not in names
    assert names == sorted(names)
    with pytest.raises(KeyError, match='does not match'):
        collector.mean('Progress/kimg')


def test_empty_report_registers_the_name_without_values():
    collector = training_stats.Collector(regex=r'empty/.*')
    training_stats.report('empty/x', [])
    collector.update()
    assert collector.names() == ['empty/x']
    assert collector.num('empty/x') == 0 and np.isnan(collector.mean('empty/x'))


def test_single_value_has_zero_std_and_non_finite_values_nan_std():
    collector = training_stats.Collector(regex=r'edge/.*')
    training_stats.report('edge/one', 4.0)
    training_stats.report('edge/inf', [1.0, float('inf')])
    collector.update()
    assert collector.std('edge/one') == 0.0
    assert collector.mean('edge/inf') == float('inf') and np.isnan(collector.std('edge/inf'))


def test_a_nan_makes_its_period_nan_but_not_the_periods_or_collectors_after_it():
    first = training_stats.Collector(regex=r'poison/.*')
    training_stats.report('poison/loss', [1.0, float('nan'), 3.0])
    first.update()
    assert first.num('poison/loss') == 3 and np.isnan(first.mean('poison/loss'))
    assert np.isnan(first.std('poison/loss'))
    training_stats.report('poison/loss', [2.0, 4.0])
    first.update()
    assert first.mean('poison/loss') == 3.0 and first.std('poison/loss') == 1.0
    # A collector created after the NaN (e.g. the next training run in this process) sees only its own values.
    second = training_stats.Collector(regex=r'poison/.*')
    training_stats.report('poison/loss', [float('inf'), 5.0])
    training_stats.report('poison/loss', 7.0)
    second.update()
    assert second.num('poison/loss') == 3 and second.mean('poison/loss') == float('inf')
    training_stats.report('poison/loss', 7.0)
    second.update()
    assert second.num('poison/loss') == 1 and second.mean('poison/loss') == 7.0


def test_report0_counts_only_on_rank_zero(monkeypatch):
    collector = training_stats.Collector(regex=r'rank0/.*')
    monkeypatch.setattr(training_stats, '_rank', 1)
    training_stats.report0('rank0/x', 9.0)
    monkeypatch.setattr(training_stats, '_rank', 0)
    training_stats.report0('rank0/x', 2.0)
    collector.update()
    assert collector.num('rank0/x') == 1 and collector.mean('rank0/x') == 2.0


def test_as_dict_is_nested_easydict():
    collector = training_stats.Collector(regex=r'dict/.*')
    training_stats.report('dict/a', [1.0, 3.0])
    collector.update()
    stats = collector.as_dict()
    assert isinstance(stats, dnnlib.EasyDict) and isinstance(stats['dict/a'], dnnlib.EasyDict)
    assert stats['dict/a'] == {'num': 2, 'mean': 2.0, 'std': 1.0}
    assert json.loads(json.dumps(stats)) == {'dict/a': {'num': 2, 'mean': 2.0, 'std': 1.0}}


def test_init_multiprocessing_after_sync_is_refused(monkeypatch):
    monkeypatch.setattr(training_stats, '_sync_called', True)
    with pytest.raises(RuntimeError, match='before the first Collector'):
        training_stats.init_multiprocessing(rank=0, sync_device=torch.device('cpu'))


@pytest.mark.slow  # ~5-10 s: two fresh processes import torch
def test_statistics_are_summed_across_two_gloo_processes(tmp_path):
    worker = tmp_path / 'worker.py'
    worker.write_text(textwrap.dedent('''
        import json, sys
        import torch
        from torch_utils import training_stats

        rank, init_file = int(sys.argv[1]), sys.argv[2]
        torch.distributed.init_process_group('gloo', init_method='file://' + init_file, rank=rank, world_size=2)
        training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
        collector = training_stats.Collector(regex='.*')
        # Rank 1 reports the names in the other order: the reduction must not depend on it.
        names = ['Loss/a', 'Loss/b'] if rank == 0 else ['Loss/b', 'Loss/a']
        for name in names:
            training_stats.report(name, torch.arange(3.0) + 10 * rank + (name == 'Loss/b'))
        training_stats.report0('Progress/tick', 7.0)
        collector.update()
        print(json.dumps(collector.as_dict()), flush=True)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    '''))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    init_file = str(tmp_path / 'rendezvous')
    procs = [subprocess.Popen([sys.executable, str(worker), str(rank), init_file], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(2)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    a = np.concatenate([np.arange(3.0), np.arange(3.0) + 10])
    b = a + 1
    for stats in results:  # every rank sees the global statistics
        assert stats['Loss/a']['num'] == 6 and stats['Loss/a']['mean'] == pytest.approx(a.mean())
        assert stats['Loss/a']['std'] == pytest.approx(a.std())
        assert stats['Loss/b']['mean'] == pytest.approx(b.mean())
        assert stats['Progress/tick'] == {'num': 1, 'mean': 7.0, 'std': 0.0}
