"""Whole experiment scripts run end to end with their stages stubbed: reused snapshots, and a stand-in for
each subprocess that writes what calc_metrics.py / generate.py would. Catches a script whose calls no longer
fit the shared helpers of experiments/idgan_vs_vae.py (no training, no metrics, a few seconds)."""

import importlib.util
import json
import os

import numpy as np
from click.testing import CliRunner
from PIL import Image

_EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments')


def _load(name):
    spec = importlib.util.spec_from_file_location(f'dry_{name}', os.path.join(_EXPERIMENTS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _option(cmd, name):
    return next(arg.split('=', 1)[1] for arg in cmd if arg.startswith(f'--{name}='))


def _fake_run(calls):
    """A `_Stages.run` that records the command and writes the files the real command would leave."""
    def run(self, cmd):
        calls.append(cmd)
        self.commands.append(' '.join(['python'] + cmd[1:]))
        if cmd[1] == 'calc_metrics.py':
            run_dir, network = _option(cmd, 'run-dir'), _option(cmd, 'network')
            os.makedirs(run_dir, exist_ok=True)
            for metric in _option(cmd, 'metrics').split(','):
                with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'a') as f:
                    f.write(json.dumps(dict(metric=metric, snapshot_pkl=network, results={metric: 0.25})) + '\n')
        elif cmd[1] == 'generate.py':
            outdir = _option(cmd, 'outdir')
            os.makedirs(outdir, exist_ok=True)
            picture = Image.fromarray(np.zeros([8, 8, 3], dtype=np.uint8))
            for name in ('traverse-seed0000', 'traverse-seed0001', 'traverse-seed0000-vae', 'traverse-seed0001-vae',
                         'compare-vae'):
                picture.save(os.path.join(outdir, f'{name}.png'))
        else:
            raise AssertionError(f'the dry run should reuse every snapshot, yet it ran {cmd[1:3]}')
    return run


def _snapshots(tmp_path, names):
    paths = {}
    for name in names:
        paths[name] = tmp_path / f'{name}.pkl'
        paths[name].write_bytes(b'stand-in')
    return paths


def _invoke(module, args, monkeypatch, tmp_path):
    calls = []
    helpers = getattr(module, 'base', module)          # idgan_vs_vae.py is the helpers' own module
    monkeypatch.setattr(helpers._Stages, 'run', _fake_run(calls))
    result = CliRunner().invoke(module.main, args + [f'--json={tmp_path / "out.json"}', f'--images={tmp_path / "img"}'],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.load(open(tmp_path / 'out.json')), calls


def test_idgan_teachers_measures_all_three_teachers_and_their_gans(tmp_path, monkeypatch):
    module = _load('idgan_teachers')
    pkls = _snapshots(tmp_path, ['betavae', 'btcvae', 'factorvae', 'g_betavae', 'g_btcvae', 'g_factorvae'])
    args = [f'--outdir={tmp_path / "runs"}', '--gan-kimg=20', '--distill-weight=0.001', '--no-dci-gen']
    args += [f'--vae={cfg}={pkls[cfg]}' for cfg in ('betavae', 'btcvae', 'factorvae')]
    args += [f'--gan={cfg}={pkls["g_" + cfg]}' for cfg in ('betavae', 'btcvae', 'factorvae')]
    result, calls = _invoke(module, args, monkeypatch, tmp_path)
    metric_calls = [c for c in calls if c[1] == 'calc_metrics.py']
    assert all('--data=dsprites' in c for c in metric_calls)
    assert {_option(c, 'network') for c in metric_calls} == {str(p) for p in pkls.values()}
    assert result['distill_weight'] == 0.001 and result['gan_kimg'] == 20
    assert result['teachers']['btcvae']['encoder']['mig'] == 0.25
    assert result['teachers']['factorvae']['idgan_generator']['mig_gen'] == 0.25
    assert result['machine']['precision_auto'] in ('fp32', 'bf16', 'fp16')
    assert sorted(os.listdir(tmp_path / 'img')) == sorted(
        f'idgan_teachers_{name}_dsprites_lambda0.001_gan20kimg.png'
        for name in ('betavae', 'btcvae', 'factorvae', 'gan_traversals'))


def test_infogan_vs_cr_measures_both_snapshots(tmp_path, monkeypatch):
    module = _load('infogan_vs_cr')
    pkls = _snapshots(tmp_path, ['infogan', 'cr'])
    args = [f'--outdir={tmp_path / "runs"}', f'--infogan={pkls["infogan"]}', f'--cr={pkls["cr"]}']
    result, calls = _invoke(module, args, monkeypatch, tmp_path)
    assert {_option(c, 'network') for c in calls if c[1] == 'calc_metrics.py'} == {str(p) for p in pkls.values()}
    assert result['infogan']['mig'] == 0.25 and result['infogan_cr']['factorvae'] == 0.25
    assert len(result['pictures']) == 2


def test_idgan_vs_vae_measures_the_vae_and_its_gan(tmp_path, monkeypatch):
    module = _load('idgan_vs_vae')
    pkls = _snapshots(tmp_path, ['vae', 'gan'])
    args = [f'--outdir={tmp_path / "runs"}', f'--vae={pkls["vae"]}', f'--gan={pkls["gan"]}']
    result, calls = _invoke(module, args, monkeypatch, tmp_path)
    assert {_option(c, 'network') for c in calls if c[1] == 'calc_metrics.py'} == {str(p) for p in pkls.values()}
    assert result['vae_encoder']['mig'] == 0.25 and result['idgan_generator']['fd_oracle'] == 0.25
