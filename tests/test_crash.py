"""SIGKILL at random moments of a short run, one of them inside a snapshot write: every restart with
--resume=auto continues from the last complete snapshot, and the run ends bit-identical to one that
was never interrupted. Also: a disk that fills at a snapshot ends training in one sentence."""

import os
import pickle
import random
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from training import fault

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One step per tick and a snapshot at every tick: most moments of the run are near a snapshot write.
TINY = ['--cbase=256', '--cmax=16', '--map=1', '--batch=4', '--workers=0', '--precision=fp32', '--aug=ada',
        '--tick=0.004', '--snap=1', '--seed=3']
KIMG = '--kimg=0.4'  # 100 steps, one snapshot each
KILLS = 10


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    import numpy as np
    import PIL.Image
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.RandomState(1)
    for i in range(16):
        PIL.Image.fromarray(rng.randint(0, 256, [32, 32], dtype=np.uint8), 'L').save(folder / f'{i:02d}.png')
    return f'--data={folder}'


def command(outdir, data, *extra):
    return [sys.executable, 'train.py', f'--outdir={outdir}', data, *TINY, KIMG, *extra]


ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def same_state(a, b):
    for key in ('G', 'D', 'G_ema', 'augment_pipe'):
        sa, sb = a[key].state_dict(), b[key].state_dict()
        assert sa.keys() == sb.keys(), key
        for name in sa:
            assert torch.equal(sa[name], sb[name]), f'{key}.{name}'


def temp_files(run_dir):
    return [n for n in os.listdir(run_dir) if n.startswith('.network-snapshot-') and n.endswith('.tmp')] \
        if os.path.isdir(run_dir) else []


def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path, data):
    reference = subprocess.run(command(tmp_path / 'ref', data), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    (ref_dir,) = [tmp_path / 'ref' / n for n in os.listdir(tmp_path / 'ref')]
    ref_final = load(fault.newest_complete_snapshot(str(ref_dir)))
    assert ref_final['resume_state']['cur_nimg'] == 400

    outdir = tmp_path / 'killed'
    rng = random.Random(0)
    run_dir = None
    caught_in_write = False
    progress = []
    for kill in range(KILLS):
        process = subprocess.Popen(command(outdir, data, '--resume=auto'), cwd=REPO, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill in (3, 6):  # inside a snapshot write: the hidden temporary file exists
            deadline = time.time() + 120
            while time.time() < deadline and process.poll() is None:
                dirs = os.listdir(outdir) if outdir.is_dir() else []
                if dirs and temp_files(outdir / dirs[0]):
                    caught_in_write = True
                    break
                time.sleep(0.0005)
        else:  # anywhere: start-up, a step, a grid, a snapshot
            time.sleep(rng.uniform(2.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        (run_dir,) = [outdir / n for n in os.listdir(outdir)]  # always continued in place
        for name in os.listdir(run_dir):  # what the globs see is always complete
            if name.startswith('network-snapshot-'):
                assert fault.snapshot_problem(run_dir / name) is None, name
        newest = fault.newest_complete_snapshot(str(run_dir))
        progress.append(load(newest)['resume_state']['cur_nimg'] if newest else 0)
    assert caught_in_write, f'no kill landed inside a snapshot write (progress {progress})'
    assert progress == sorted(progress)  # a restart never went back past a complete snapshot

    final = subprocess.run(command(outdir, data, '--resume=auto'), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert final.returncode == 0, final.stdout + final.stderr
    ours = load(fault.newest_complete_snapshot(str(run_dir)))
    assert ours['resume_state']['cur_nimg'] == 400
    same_state(ours, ref_final)
    # Every snapshot the uninterrupted run wrote exists in the killed run too, with the same weights.
    for name in sorted(n for n in os.listdir(ref_dir) if n.startswith('network-snapshot-')):
        assert (run_dir / name).exists(), name
        same_state(load(run_dir / name), load(ref_dir / name))


def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_at_a_snapshot_is_one_sentence_and_keeps_the_last_snapshot(tmp_path, data):
    first = subprocess.run([a if a != KIMG else '--kimg=0.008' for a in command(tmp_path, data)], cwd=REPO, env=ENV,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (run_dir,) = [tmp_path / n for n in os.listdir(tmp_path)]
    before = {n: (run_dir / n).read_bytes() for n in os.listdir(run_dir) if n.startswith('network-snapshot-')}
    last = fault.newest_complete_snapshot(str(run_dir))
    size = os.path.getsize(last)
    stats_before = (run_dir / 'stats.jsonl').read_bytes()

    # Continue it with files limited below a snapshot's size: the first new snapshot cannot be written.
    args = [a if a != KIMG else '--kimg=0.1' for a in command(tmp_path, data, f'--resume={run_dir}')]
    result = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True,
                            preexec_fn=_limit_file_size(size // 2))
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith('Error: training stopped: cannot write '), result.stderr
    assert 'File too large' in errors[0] and f'the last complete snapshot is {last}' in errors[0]
    assert 'Traceback' not in result.stderr + result.stdout
    after = {n: (run_dir / n).read_bytes() for n in os.listdir(run_dir) if n.startswith('network-snapshot-')}
    assert after == before                                       # nothing lost, nothing half-written
    assert not temp_files(run_dir)                              # the failed temporary file was removed
    stats_after = (run_dir / 'stats.jsonl').read_bytes()
    assert stats_after.startswith(stats_before) and stats_after.endswith(b'\n')  # whole lines only


def test_sub_kimg_snapshots_keep_their_own_names_and_time_continues_after_resume(tmp_path, data):
    short = [a if a != KIMG else '--kimg=0.008' for a in command(tmp_path, data)]
    assert subprocess.run(short, cwd=REPO, env=ENV, capture_output=True).returncode == 0
    (run_dir,) = [tmp_path / n for n in os.listdir(tmp_path)]
    longer = [a if a != KIMG else '--kimg=0.016' for a in command(tmp_path, data, f'--resume={run_dir}')]
    done = subprocess.run(longer, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(n for n in os.listdir(run_dir) if n.startswith('network-snapshot-'))
    # Ticks of 4 images: one snapshot per tick, none overwritten, and "newest by name" is the newest.
    assert names == ['network-snapshot-000000.pkl', 'network-snapshot-000000_008.pkl',
                     'network-snapshot-000000_012.pkl', 'network-snapshot-000000_016.pkl']
    assert [load(run_dir / n)['resume_state']['cur_nimg'] for n in names] == [4, 8, 12, 16]
    import json
    lines = [json.loads(line) for line in open(run_dir / 'stats.jsonl')]
    total = [line['Timing/total_sec']['mean'] for line in lines]
    assert len(total) == 4 and total == sorted(total)  # the resumed ticks count on from the first segment
    options = json.load(open(run_dir / 'training_options.json'))
    assert options['total_kimg'] == 0.016  # the continued run's new length is recorded
