"""Fault tolerance: SIGKILL mid-run then --resume=auto, SIGTERM's final snapshot, truncated snapshots."""

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

import generate
import train
from training import fault

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--cbase=256', '--cmax=16', '--map=1', '--batch=4', '--workers=0', '--precision=fp32',
        '--aug=noaug', '--tick=0.004']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A folder of 16 random 32x32 images (a built-in dataset would import scikit-learn in every process)."""
    import numpy as np
    import PIL.Image
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.RandomState(0)
    for i in range(16):
        PIL.Image.fromarray(rng.randint(0, 256, [32, 32], dtype=np.uint8), 'L').save(folder / f'{i:02d}.png')
    return f'--data={folder}'


def start_training(outdir, data, *extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return subprocess.Popen([sys.executable, 'train.py', f'--outdir={outdir}', data, *TINY, *extra], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(process, needle, timeout=120):
    """Read the process's output until a line contains `needle`; returns everything read."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return ''.join(seen)
    process.kill()
    raise AssertionError(f'"{needle}" never appeared:\n' + ''.join(seen))


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def test_sigkill_mid_run_leaves_complete_snapshots_and_resume_auto_continues(tmp_path, data):
    process = start_training(tmp_path, data, '--kimg=1', '--snap=1')
    wait_for_line(process, 'tick 2')  # snapshots were written at ticks 0..1; the run is mid-step now
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = [tmp_path / name for name in os.listdir(tmp_path)]
    snapshot = fault.newest_complete_snapshot(str(run_dir))
    assert snapshot is not None
    names = os.listdir(run_dir)
    for name in names:
        if name.endswith('.pkl'):
            assert fault.snapshot_problem(run_dir / name) is None, name
    killed_at = load(snapshot)['resume_state']['cur_nimg']
    assert killed_at >= 8

    code = subprocess.run([sys.executable, 'train.py', f'--outdir={tmp_path}', data, *TINY, '--kimg=0.028', '--snap=1',
                           '--resume=auto'], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert code.returncode == 0, code.stdout + code.stderr
    assert f'--resume=auto: continuing {run_dir}' in code.stdout
    assert os.listdir(tmp_path) == [run_dir.name]  # continued in place, no new run directory
    final = load(fault.newest_complete_snapshot(str(run_dir)))
    assert final['resume_state']['cur_nimg'] == 28
    assert f'Resuming from "{snapshot}"' in open(run_dir / 'log.txt').read()


def test_sigterm_writes_a_final_snapshot_and_exits_143(tmp_path, data):
    process = start_training(tmp_path, data, '--kimg=1', '--snap=1000')  # only tick 0 would snapshot on its own
    wait_for_line(process, 'tick 2')
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, rest
    assert 'Stopped by SIGTERM' in rest and '--resume=' in rest
    (run_dir,) = [tmp_path / name for name in os.listdir(tmp_path)]
    final = load(fault.newest_complete_snapshot(str(run_dir)))
    assert final['resume_state']['cur_nimg'] >= 12  # later than the tick-0 snapshot (4 images)



def test_sigterm_ends_vae_training_with_a_final_snapshot(tmp_path, data):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    process = subprocess.Popen([sys.executable, 'train.py', f'--outdir={tmp_path}', data, '--cfg=betavae', '--code-dim=3',
                                '--batch=8', '--kimg=100', '--tick=0.008', '--snap=1000', '--workers=0',
                                '--precision=fp32'], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    wait_for_line(process, 'tick 2')
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, rest
    assert 'Stopped by SIGTERM' in rest and 'vae-snapshot-' in rest and '--resume=' in rest
    (run_dir,) = [tmp_path / name for name in os.listdir(tmp_path)]
    final = load(fault.newest_complete_snapshot(str(run_dir), prefix='vae-snapshot-'))
    assert final['resume_state']['cur_nimg'] >= 24  # later than the tick-0 snapshot (8 images)

@pytest.fixture
def all_reduce_calls(monkeypatch):
    """Stands in for a 2-rank all-reduce (the other rank asks nothing) and records each call."""
    calls = []

    def fake_all_reduce(tensor, op=None):
        calls.append(tensor.clone())

    monkeypatch.setattr(torch.distributed, 'all_reduce', fake_all_reduce)
    return calls


def test_ranks_exchange_the_stop_flag_only_every_agreement_interval_and_at_ticks(all_reduce_calls):
    K = fault.ABORT_AGREEMENT_STEPS
    looks = []

    def always_stop():
        looks.append(None)
        return True

    stop_at = [batch_idx for batch_idx in range(1, 2 * K + 1)
               if fault.poll_abort(always_stop, 2, 'cpu', batch_idx=batch_idx, at_tick=batch_idx == 3)]
    assert stop_at == [3, K, 2 * K]  # a tick at step 3, then every K steps
    assert len(looks) == 3           # the flag is read (and exchanged) at those points only
    assert len(all_reduce_calls) == 3 and all(float(t) == 1 for t in all_reduce_calls)


def test_a_stop_asked_between_agreement_points_takes_effect_at_the_next_one(all_reduce_calls):
    K = fault.ABORT_AGREEMENT_STEPS
    stop = fault.StopRequest(escalate=False)
    answers = []
    for batch_idx in range(1, K + 1):
        if batch_idx == 2:
            stop.signum = signal.SIGTERM  # what the handler does, at once
        answers.append(fault.poll_abort(stop, 2, 'cpu', batch_idx=batch_idx, at_tick=False))
    assert answers == [False] * (K - 1) + [True]
    assert len(all_reduce_calls) == 1


def test_a_single_process_reads_the_stop_flag_every_step_without_a_collective(all_reduce_calls):
    flags = iter([False, False, True])
    answers = [fault.poll_abort(lambda: next(flags), 1, 'cpu', batch_idx=i, at_tick=False) for i in (1, 2, 3)]
    assert answers == [False, False, True]
    assert all_reduce_calls == []


def test_truncated_newest_snapshot_is_skipped_with_a_warning_naming_it(tmp_path):
    good = pickle.dumps({'G_ema': None, 'kimg': 1})
    (tmp_path / 'network-snapshot-000001.pkl').write_bytes(good)
    (tmp_path / 'network-snapshot-000002.pkl').write_bytes(good[:len(good) // 2])
    (tmp_path / 'network-snapshot-000003.pkl').write_bytes(b'')
    with pytest.warns(fault.IncompleteSnapshotWarning) as record:
        assert fault.newest_complete_snapshot(str(tmp_path)) == str(tmp_path / 'network-snapshot-000001.pkl')
    messages = [str(w.message) for w in record]
    assert any('network-snapshot-000003.pkl' in m and 'empty' in m for m in messages)
    assert any('network-snapshot-000002.pkl' in m and 'end before the pickle does' in m for m in messages)


def test_resume_auto_picks_the_newest_run_of_the_same_description(tmp_path):
    snap = pickle.dumps({'G_ema': None})
    for name in ('00000-digits-stylegan2-batch4', '00001-digits-stylegan2-batch8', '00002-digits-stylegan2-batch4'):
        os.makedirs(tmp_path / name)
    (tmp_path / '00000-digits-stylegan2-batch4' / 'network-snapshot-000000.pkl').write_bytes(snap)
    (tmp_path / '00001-digits-stylegan2-batch8' / 'network-snapshot-000000.pkl').write_bytes(snap)
    (tmp_path / '00002-digits-stylegan2-batch4' / 'network-snapshot-000000.pkl').write_bytes(snap[:5])
    with pytest.warns(fault.IncompleteSnapshotWarning):
        found, run_dir = fault.find_run_to_continue(str(tmp_path), 'digits-stylegan2-batch4')
    assert run_dir == str(tmp_path / '00000-digits-stylegan2-batch4')
    assert fault.find_run_to_continue(str(tmp_path), 'dsprites-stylegan2-batch4') == (None, None)


def test_truncated_pickle_named_explicitly_is_rejected_in_one_sentence(tmp_path):
    broken = tmp_path / 'network-snapshot-000004.pkl'
    broken.write_bytes(pickle.dumps({'G_ema': list(range(1000))})[:300])
    result = CliRunner().invoke(generate.main, [f'--network={broken}', '--seeds=0', f'--outdir={tmp_path / "out"}'])
    assert result.exit_code != 0 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert f'{broken} is truncated or not a pickle' in result.output
    assert 'Traceback' not in result.output
    with pytest.warns(fault.IncompleteSnapshotWarning, match='network-snapshot-000004.pkl'):
        result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', '--data=digits', *TINY, f'--resume={tmp_path}',
                                                 '--dry-run'])
    assert result.exit_code != 0
    assert 'without a complete network-snapshot' in result.output
