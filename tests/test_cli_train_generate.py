"""train.py and generate.py from the command line: a tiny end-to-end run and every user mistake."""

import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import generate
import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--cbase=256', '--cmax=16', '--map=1', '--batch=4', '--workers=0', '--precision=fp32']


def run_cli(command, args):
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """A 32x32 StyleGAN2 trained for 8 images on digits, through the CLI."""
    outdir = tmp_path_factory.mktemp('runs')
    code, output = run_cli(train.main, [f'--outdir={outdir}', '--data=digits', '--kimg=0.008', '--tick=0.004'] + TINY)
    assert code == 0, output
    run_dir = os.path.join(outdir, os.listdir(outdir)[0])
    return run_dir


def test_train_writes_the_stylegan2_run_directory(tiny_run):
    assert os.path.basename(tiny_run) == '00000-digits-stylegan2-batch4'
    files = set(os.listdir(tiny_run))
    for name in ('log.txt', 'training_options.json', 'stats.jsonl', 'reals.png', 'fakes_init.png',
                 'fakes000000.png', 'network-snapshot-000000.pkl'):
        assert name in files, name
    log = open(os.path.join(tiny_run, 'log.txt')).read()
    assert 'tick 0' in log and 'kimg' in log and 'augment' in log
    assert len(open(os.path.join(tiny_run, 'stats.jsonl')).readlines()) >= 2


def test_generate_writes_one_png_per_seed_in_a_fresh_process(tiny_run, tmp_path):
    pkl = os.path.join(tiny_run, 'network-snapshot-000000.pkl')
    subprocess.run([sys.executable, 'generate.py', f'--network={pkl}', '--seeds=0-7', f'--outdir={tmp_path}'],
                   check=True, cwd=REPO, capture_output=True)
    names = sorted(os.listdir(tmp_path))
    assert names == [f'seed{i:04d}.png' for i in range(8)]
    images = [np.asarray(PIL.Image.open(tmp_path / n)) for n in names]
    assert images[0].shape == (32, 32)
    assert not np.array_equal(images[0], images[1])  # different seeds, different images


def test_generate_is_reproducible_per_seed(tiny_run, tmp_path):
    pkl = os.path.join(tiny_run, 'network-snapshot-000000.pkl')
    for sub in ('a', 'b'):
        code, output = run_cli(generate.main, [f'--network={pkl}', '--seeds=3', f'--outdir={tmp_path / sub}'])
        assert code == 0, output
    assert (tmp_path / 'a' / 'seed0003.png').read_bytes() == (tmp_path / 'b' / 'seed0003.png').read_bytes()


def test_dry_run_prints_options_and_creates_nothing(tmp_path):
    code, output = run_cli(train.main, [f'--outdir={tmp_path / "runs"}', '--data=digits', '--dry-run'] + TINY)
    assert code == 0
    assert 'Dry run' in output and '"batch_size": 4' in output
    assert not (tmp_path / 'runs').exists()


def test_tf32_is_off_unless_asked_and_reaches_the_loop(tmp_path):
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', '--data=digits', '--dry-run'] + TINY)
    assert code == 0 and '"allow_tf32": false' in output and 'TF32 on' not in output
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', '--data=digits', '--dry-run', '--tf32=1'] + TINY)
    assert code == 0 and '"allow_tf32": true' in output and 'TF32 on' in output


def test_stylegan2_auto_rule_sets_batch_and_gamma(tmp_path):
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', '--data=dsprites', '--dry-run'])
    assert code == 0
    # 64x64: batch min(4096 // 64, 32) = 32, gamma 0.0002 * 64^2 / 32 = 0.0256, EMA 10 kimg.
    assert '"batch_size": 32' in output and '"r1_gamma": 0.0256' in output and '"ema_kimg": 10.0' in output


@pytest.mark.parametrize('args, message', [
    (['--cfg=nonsense'], 'unknown --cfg=nonsense'),
    (['--batch=6', '--gpus=4'], 'must be divisible by --gpus'),
    (['--batch=8', '--batch-gpu=3'], 'must be a multiple of --gpus x --batch-gpu'),
    (['--aug=fixed'], '--aug=fixed needs --p'),
    (['--p=0.2'], '--p can only be given with --aug=fixed'),
    (['--cond=1'], None),  # digits has labels: accepted
    (['--resume=does/not/exist.pkl'], 'does not exist'),
    (['--precision=fp8'], "Invalid value for '--precision'"),
])
def test_train_rejects_bad_options_with_one_sentence(tmp_path, args, message):
    base = [f'--outdir={tmp_path}', '--data=digits', '--dry-run', '--workers=0']
    code, output = run_cli(train.main, base + args)
    if message is None:
        assert code == 0, output
        return
    assert code != 0
    assert message in output
    assert 'Traceback' not in output


def test_train_rejects_missing_and_non_power_of_two_data(tmp_path):
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', '--data=nowhere/at/all.zip', '--dry-run'])
    assert code != 0 and 'nowhere/at/all.zip' in output
    folder = tmp_path / 'odd'
    folder.mkdir()
    for i in range(3):
        PIL.Image.fromarray(np.full((24, 24), 40 * i, np.uint8)).save(folder / f'{i}.png')
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', f'--data={folder}', '--dry-run'])
    assert code != 0 and 'power-of-two' in output and 'Traceback' not in output


def test_train_rejects_labels_when_the_data_has_none(tmp_path):
    folder = tmp_path / 'plain'
    folder.mkdir()
    for i in range(2):
        PIL.Image.fromarray(np.full((16, 16), 100 * i, np.uint8)).save(folder / f'{i}.png')
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', f'--data={folder}', '--cond=1', '--dry-run'])
    assert code != 0 and 'needs labels' in output


def test_resume_from_a_snapshot_of_another_resolution_is_refused(tiny_run, tmp_path):
    pkl = os.path.join(tiny_run, 'network-snapshot-000000.pkl')  # 32x32 digits
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', '--data=dsprites', f'--resume={pkl}', '--dry-run'])
    assert code != 0 and 'trained at 32x32' in output and '64x64' in output


def test_resume_from_a_truncated_snapshot_is_refused(tiny_run, tmp_path):
    pkl = os.path.join(tiny_run, 'network-snapshot-000000.pkl')
    broken = tmp_path / 'broken.pkl'
    broken.write_bytes(open(pkl, 'rb').read()[:1000])
    code, output = run_cli(train.main, [f'--outdir={tmp_path}', '--data=digits', f'--resume={broken}', '--dry-run'])
    assert code != 0 and 'is truncated or not a pickle' in output and 'broken.pkl' in output


def test_generate_reports_missing_truncated_and_foreign_pickles(tmp_path, tiny_run):
    code, output = run_cli(generate.main, ['--network=missing.pkl', f'--outdir={tmp_path}'])
    assert code != 0 and 'missing.pkl does not exist' in output
    pkl = os.path.join(tiny_run, 'network-snapshot-000000.pkl')
    broken = tmp_path / 'broken.pkl'
    broken.write_bytes(open(pkl, 'rb').read()[:1000])
    code, output = run_cli(generate.main, [f'--network={broken}', f'--outdir={tmp_path}'])
    assert code != 0 and 'truncated' in output
    foreign = tmp_path / 'list.pkl'
    foreign.write_bytes(pickle.dumps([1, 2, 3]))
    code, output = run_cli(generate.main, [f'--network={foreign}', f'--outdir={tmp_path}'])
    assert code != 0 and 'not a network snapshot' in output


def test_generate_rejects_bad_seed_lists(tiny_run, tmp_path):
    pkl = os.path.join(tiny_run, 'network-snapshot-000000.pkl')
    code, output = run_cli(generate.main, [f'--network={pkl}', '--seeds=5-2', f'--outdir={tmp_path}'])
    assert code != 0 and 'ends before it starts' in output
