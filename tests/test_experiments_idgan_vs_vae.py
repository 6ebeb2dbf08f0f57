"""The result assembly of experiments/idgan_vs_vae.py (no training: metric logs and PNGs are written by hand)."""

import importlib.util
import json
import os

import click
import numpy as np
import pytest
from PIL import Image

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'idgan_vs_vae.py')
_spec = importlib.util.spec_from_file_location('idgan_vs_vae', _PATH)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def _append(run_dir, metric, snapshot, results):
    with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'a') as f:
        f.write(json.dumps(dict(results=results, metric=metric, snapshot_pkl=snapshot)) + '\n')


def test_read_last_result_takes_newest_line_and_checks_snapshot(tmp_path):
    snap = str(tmp_path / 'vae.pkl')
    _append(tmp_path, 'mig', snap, dict(mig=0.1))
    _append(tmp_path, 'mig', snap, dict(mig=0.25))
    assert exp.read_last_result(str(tmp_path), 'mig', snap) == dict(mig=0.25)
    (tmp_path / 'metrics').mkdir()   # calc_metrics.py logs the snapshot relative to the run dir
    _append(tmp_path / 'metrics', 'mig', '../vae.pkl', dict(mig=0.5))
    assert exp.read_last_result(str(tmp_path / 'metrics'), 'mig', snap) == dict(mig=0.5)
    with pytest.raises(click.ClickException, match='not .*other.pkl'):
        exp.read_last_result(str(tmp_path), 'mig', str(tmp_path / 'other.pkl'))
    with pytest.raises(click.ClickException, match='holds no result'):
        exp.read_last_result(str(tmp_path), 'dci', snap)


def test_results_table_formats_numbers_pairs_and_missing_scores():
    vae = dict(factorvae=0.61234, mig=0.2, dci_disentanglement=0.3, dci_completeness=0.4, dci_informativeness_test=0.5,
               mig_gen=0.05, dci_gen_disentanglement=0.1, dci_gen_completeness=0.2, dci_gen_informativeness_test=0.3,
               fd_oracle=92.71, kid_oracle=0.72, pr_oracle_precision=0.016, pr_oracle_recall=0.0)
    gan = dict(mig_gen=0.04, fd_oracle=12.0)
    lines = exp.results_table([('VAE', vae), ('GAN', gan)]).split('\n')
    assert len(lines) == 4
    assert lines[0].count('|') == len(exp.TABLE_COLUMNS) + 2
    assert lines[2] == ('| VAE | 0.612 | 0.200 | 0.300 / 0.400 / 0.500 | 0.050 | 0.100 / 0.200 / 0.300 | 92.7 | 0.720 '
                        '| 0.016 / 0.000 |')
    assert lines[3] == '| GAN | – | – | – | 0.040 | – | 12.0 | – | – |'


def test_side_by_side_pastes_with_gap_and_scale(tmp_path):
    a, b = tmp_path / 'a.png', tmp_path / 'b.png'
    Image.fromarray(np.zeros([4, 3, 3], np.uint8)).save(a)
    Image.fromarray(np.full([6, 5, 3], 100, np.uint8)).save(b)
    out = tmp_path / 'sub' / 'out.png'
    exp.side_by_side([str(a), str(b)], str(out), gap=2, scale=2)
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (12, 20, 3)
    assert (pixels[:8, :6] == 0).all() and (pixels[:, 6:10] == 255).all() and (pixels[:, 10:] == 100).all()
    assert (pixels[8:, :6] == 255).all()   # below the shorter image: background
    assert os.listdir(tmp_path / 'sub') == ['out.png']


def test_write_json_atomic_round_trip(tmp_path):
    path = str(tmp_path / 'r' / 'x.json')
    exp.write_json_atomic(path, dict(a=1, b=[0.5]))
    exp.write_json_atomic(path, dict(a=2))
    assert json.load(open(path)) == dict(a=2)
    assert os.listdir(tmp_path / 'r') == ['x.json']


def test_results_name_files_relative_to_the_checkout(tmp_path):
    result = dict(snapshot=os.path.join('/some/checkout', 'runs', 'a.pkl'), commands=['python x.py --network=/some/checkout/runs/b.pkl'],
                  kimg=20, nested=dict(path='/elsewhere/c.pkl'))
    assert exp.repo_relative(result, repo='/some/checkout') == dict(
        snapshot='runs/a.pkl', commands=['python x.py --network=runs/b.pkl'], kimg=20, nested=dict(path='/elsewhere/c.pkl'))


def test_dsprites_commands_are_the_committed_ones_and_shapes3d_adds_the_nuisance():
    settings = exp.DATA_SETTINGS['dsprites']
    vae = exp.vae_command('python', 'runs/idgan_vs_vae', 'dsprites', settings['beta'], settings['vae_kimg'], 0)
    assert ' '.join(vae) == ('python train.py --outdir=runs/idgan_vs_vae --data=dsprites --cfg=betavae --beta=8 '
                             '--code-dim=10 --kimg=20 --tick=4 --snap=100 --workers=0 --seed=0')
    gan = exp.gan_command('python', 'runs/idgan_vs_vae', 'dsprites', 'v.pkl', 20, settings['nuisance_dim'], 0)
    assert ' '.join(gan) == ('python train.py --outdir=runs/idgan_vs_vae --data=dsprites --cfg=idgan --vae=v.pkl '
                             '--cbase=2048 --cmax=32 --map=2 --batch=8 --kimg=20 --tick=1 --snap=5 '
                             '--distill-weight=0.1 --workers=0 --seed=0')
    shapes = exp.DATA_SETTINGS['shapes3d']
    gan = exp.gan_command('python', 'o', 'shapes3d', 'v.pkl', 12.5, shapes['nuisance_dim'], 1)
    assert gan[3:7] == ['--data=shapes3d', '--cfg=idgan', '--vae=v.pkl', '--nuisance-dim=256']
    assert '--kimg=12.5' in gan and gan[-1] == '--seed=1'
    assert '--beta=4' in exp.vae_command('python', 'o', 'shapes3d', shapes['beta'], shapes['vae_kimg'], 0)
    tc = exp.vae_command('python', 'o', 'dsprites', 6, 100, 0, vae_cfg='btcvae')
    assert tc[3:6] == ['--data=dsprites', '--cfg=btcvae', '--beta=6'] and '--kimg=100' in tc
    assert '--distill-weight=0.01' in exp.gan_command('python', 'o', 'dsprites', 'v.pkl', 20, 0, 0, distill_weight=0.01)
    assert not any(arg.startswith('--gamma') for arg in gan)
    assert exp.gan_command('python', 'o', 'dsprites', 'v.pkl', 20, 0, 0, gamma=10)[6] == '--gamma=10'


def test_cli_needs_beta_for_another_vae_objective(tmp_path):
    from click.testing import CliRunner
    result = CliRunner().invoke(exp.main, ['--vae-cfg=btcvae', f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and '--vae-cfg=btcvae needs --beta' in result.output
    assert os.listdir(tmp_path) == []


def test_cli_refuses_a_gan_without_its_vae_and_an_unknown_dataset(tmp_path):
    from click.testing import CliRunner
    gan = tmp_path / 'g.pkl'
    gan.write_bytes(b'x')
    result = CliRunner().invoke(exp.main, ['--data=shapes3d', f'--gan={gan}', f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and '--gan needs the --vae' in result.output
    result = CliRunner().invoke(exp.main, ['--data=mnist', f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and 'mnist' in result.output


def test_variant_suffix_names_each_non_default_setting_and_the_training_seed():
    assert exp.variant_suffix('betavae', 0.1, None, 20, 0) == ''
    assert exp.variant_suffix('btcvae', 0.001, None, 60, 0) == '_btcvae_lambda0.001_gan60kimg'
    assert exp.variant_suffix('btcvae', 0.001, 0.1, 20, 0) == '_btcvae_lambda0.001_gamma0.1'
    assert exp.variant_suffix('betavae', 0.1, None, 20, 2) == '_trainseed2'


def test_machine_record_states_what_auto_precision_chose_here(monkeypatch):
    from torch_utils import precision
    record = exp.machine_record()
    assert set(record) == {'cpu', 'cpu_bf16_flags', 'device', 'precision_auto', 'threads', 'torch', 'python'}
    assert record['precision_auto'] == precision.resolve_precision('auto', record['device'])
    assert record['cpu_bf16_flags'] == list(precision.cpu_bf16_flags())
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    assert exp.machine_record()['threads'] == '1'
