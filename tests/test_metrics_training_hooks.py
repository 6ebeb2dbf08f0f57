"""Fidelity metrics on what the GAN and VAE training loops snapshot, and the new metrics in calc_metrics.py."""

import json
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dnnlib
from metrics import fidelity
from tests.test_metrics_fidelity import detector_file  # noqa: F401, F811 (a fixture)
from tests.test_training_loop import tiny_config
from tests.test_vae import _loop_kwargs, _write_toy_dataset
from training.vae_loop import vae_training_loop


@pytest.fixture
def small_fid(detector_file, monkeypatch):  # noqa: F811
    """fid50k_full with a local TorchScript detector and a few dozen images, so training can afford it."""
    options = fidelity.METRIC_SPECS['fid50k_full'].options
    for key, value in dict(detector_url=str(detector_file), num_real=48, num_gen=24).items():
        monkeypatch.setitem(options, key, value)
    return detector_file


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_fid_of_a_plain_stylegan2_snapshot_as_the_training_loop_passes_it(tmp_path, small_fid):
    from metrics import metric_main
    from training.latent import GaussianLatent
    c = tiny_config(tmp_path / 'gan', total_kimg=0.004)
    G = dnnlib.util.construct_class_by_name(**c.G_kwargs, c_dim=0, img_resolution=32, img_channels=1)
    snapshot_data = dict(training_set_kwargs=dict(c.training_set_kwargs), G=G, G_ema=G, D=None, augment_pipe=None,
                         latent=GaussianLatent(z_dim=G.z_dim))
    snapshot_pkl = str(tmp_path / 'gan' / 'network-snapshot-000000.pkl')
    result = metric_main.calc_metric(metric='fid50k_full', network_pkl=snapshot_pkl, run_dir=c.run_dir,
                                     snapshot_data=snapshot_data, dataset_kwargs=c.training_set_kwargs,
                                     num_gpus=1, rank=0, device='cpu', progress=False)
    metric_main.report_metric(result, run_dir=c.run_dir, snapshot_pkl=snapshot_pkl)
    lines = read_jsonl(tmp_path / 'gan' / 'metric-fid50k_full.jsonl')
    assert len(lines) == 1 and lines[0]['results']['fid50k_full'] > 0
    assert lines[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl'


def test_vae_training_reports_metrics_at_each_snapshot(tmp_path, small_fid):
    data = _write_toy_dataset(str(tmp_path / 'squares'))
    vae_training_loop(**_loop_kwargs(data, tmp_path / 'vae', total_kimg=0.032, kimg_per_tick=0.016,
                                     network_snapshot_ticks=1, metrics=['fid50k_full']))
    lines = read_jsonl(tmp_path / 'vae' / 'metric-fid50k_full.jsonl')
    assert len(lines) == 2 and all(line['results']['fid50k_full'] >= 0 for line in lines)


def run_cli(*args):
    return CliRunner().invoke(calc_metrics.main, list(args))


def test_calc_metrics_runs_fid_by_url_on_a_gan_pickle(tmp_path, small_fid):
    from networks.stylegan2 import Generator
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=64, channel_max=4))
    pkl = tmp_path / 'network-snapshot-000000.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(dict(G_ema=G), f)
    result = run_cli(f'--network={pkl}', '--metrics=fid50k_full', '--data=digits', '--quiet',
                     f'--options={json.dumps(dict(detector_url=str(small_fid), num_real=40, num_gen=20))}')
    assert result.exit_code == 0, result.output
    assert read_jsonl(tmp_path / 'metric-fid50k_full.jsonl')[0]['results']['fid50k_full'] > 0
    missing = run_cli(f'--network={pkl}', '--metrics=fid50k_full', '--data=digits', '--quiet',
                      '--options={"detector_url": "file:///nonexistent/inception.pt"}')
    assert missing.exit_code != 0 and 'cannot be loaded' in missing.output
    no_factors = run_cli(f'--network={pkl}', '--metrics=mig_gen', '--data=digits', '--quiet')
    assert no_factors.exit_code != 0 and 'no ground-truth factors' in no_factors.output
    unknown = run_cli(f'--network={pkl}', '--metrics=fid50k', '--quiet')
    assert unknown.exit_code != 0 and 'unknown metric(s) fid50k' in unknown.output
    assert not os.path.exists(tmp_path / 'metric-fid50k.jsonl')


def test_vae_training_passes_metric_options_to_its_metrics(tmp_path, small_fid):
    from metrics import metric_main
    data = _write_toy_dataset(str(tmp_path / 'squares'))
    vae_training_loop(**_loop_kwargs(data, tmp_path / 'vae', total_kimg=0.016, kimg_per_tick=0.016,
                                     network_snapshot_ticks=1, metrics=['fid50k_full'], metric_kwargs=dict(num_gen=10)))
    logged = read_jsonl(tmp_path / 'vae' / 'metric-fid50k_full.jsonl')[-1]['results']['fid50k_full']
    pkl = str(tmp_path / 'vae' / 'vae-snapshot-000000.pkl')

    def fid(**options):
        return metric_main.calc_metric('fid50k_full', network_pkl=pkl, progress=False, **options).results.fid50k_full
    assert logged == pytest.approx(fid(num_gen=10), rel=1e-6)   # the option reached the metric...
    assert logged != pytest.approx(fid(), rel=1e-6)              # ...and it changes the result (24 images)


@pytest.mark.parametrize('args, message', [
    (['--metrics=mig', '--metric-options={"num_train": 500}'], None),
    (['--metrics=mig', '--metric-options={"num_gen": 500}'], '--metric-options num_gen apply to none of the chosen'),
    (['--metrics=mig', '--metric-options=notjson'], '--metric-options is not valid JSON'),
    (['--metrics=mig', '--metric-options=[1]'], '--metric-options must be a JSON object'),
    (['--metric-options={"num_train": 500}'], '--metric-options was given without any metric'),
    (['--metrics=mig,bogus'], 'unknown metric(s) bogus'),
])
@pytest.mark.parametrize('cfg', ['stylegan2', 'betavae'])
def test_train_checks_metric_options_before_training(tmp_path, cfg, args, message):
    import train
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', '--data=digits', f'--cfg={cfg}', '--kimg=1',
                                             '--workers=0', '--dry-run'] + args)
    if message is None:
        assert result.exit_code == 0, result.output
        assert '"metric_kwargs": {\n    "num_train": 500\n  }' in result.output
        return
    assert result.exit_code != 0 and message in result.output and 'Traceback' not in result.output
