"""metric_main (registry, calc_metric, report_metric), representation functions and calc_metrics.py."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from metrics import metric_main
from metrics.ground_truth import MetricError
from metrics.representation import NetworkRepresentation, images_to_network_input

SMALL = dict(num_train=200, num_test=100, num_eval=50, num_variance_estimate=200, batch_size=16)


def pooled_encoder(resolution=64):
    """A stand-in VAE encoder: 2x2 average pooling, a code that tracks sprite position and size."""
    encoder = torch.nn.Sequential(torch.nn.AvgPool2d(32), torch.nn.Flatten())
    encoder.img_resolution, encoder.img_channels, encoder.code_dim = resolution, 1, 4
    return encoder


def test_registry_lists_the_disentanglement_metrics():
    for name in ('factorvae', 'betavae', 'mig', 'dci', 'sap', 'modularity', 'gaussian_tc'):
        assert metric_main.is_valid_metric(name)
    assert not metric_main.is_valid_metric('fid50k_nope')
    assert 'mig' in metric_main.list_valid_metrics()


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(MetricError, match='Unknown metric'):
        metric_main.calc_metric('nope', snapshot_data=dict(E=pooled_encoder()), data='dsprites')


def test_calc_metric_returns_stylegan_style_result_dict():
    result = metric_main.calc_metric('mig', snapshot_data=dict(E=pooled_encoder()), data='dsprites', progress=False,
                                     **SMALL)
    assert set(result) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus'}
    assert result.metric == 'mig' and result.num_gpus == 1
    # The registry path (dataset, representation, seed 0, options) equals calling the metric directly.
    from metrics import mig
    from metrics.ground_truth import as_ground_truth
    from metrics.representation import representation_from_snapshot
    from training.dataset import open_dataset
    direct = mig.compute_mig(as_ground_truth(open_dataset('dsprites')), representation_from_snapshot(
        dict(E=pooled_encoder())), np.random.RandomState(0), num_train=200, batch_size=16)
    assert result.results.mig == pytest.approx(direct['discrete_mig'], abs=1e-12)
    assert result.results.mig > 0.0


def test_calc_metric_uses_the_snapshots_training_set_when_no_data_is_given():
    snapshot = dict(E=pooled_encoder(), training_set_kwargs=dict(class_name='training.dataset.BuiltinDataset',
                                                                 path='dsprites', xflip=True))
    result = metric_main.calc_metric('factorvae', snapshot_data=snapshot, progress=False, **SMALL)
    assert 0.0 <= result.results.factorvae <= 1.0 and result.results.factorvae_num_active_dims >= 1


def test_other_ranks_return_empty_results():
    result = metric_main.calc_metric('mig', snapshot_data=dict(E=pooled_encoder()), data='dsprites', rank=1, num_gpus=2)
    assert result.results == {}


def test_dataset_without_factors_is_a_clear_error():
    with pytest.raises(MetricError, match='no ground-truth factors'):
        metric_main.calc_metric('mig', snapshot_data=dict(E=pooled_encoder()), data='digits', progress=False)


def test_snapshot_without_encoder_is_a_clear_error():
    with pytest.raises(MetricError, match=r'no encoder \(E\) or Q head'):
        metric_main.calc_metric('mig', snapshot_data=dict(G=None), data='dsprites', progress=False)


def test_report_metric_appends_one_json_line_per_call(tmp_path):
    result = metric_main.calc_metric('gaussian_tc', snapshot_data=dict(E=pooled_encoder()), data='dsprites',
                                     progress=False, num_train=100)
    snapshot = os.path.join(tmp_path, 'vae-snapshot-000010.pkl')
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=snapshot)
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=snapshot)
    lines = open(os.path.join(tmp_path, 'metric-gaussian_tc.jsonl')).read().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[1])
    assert record['snapshot_pkl'] == 'vae-snapshot-000010.pkl' and record['metric'] == 'gaussian_tc'
    assert 'gaussian_tc' in record['results'] and 'timestamp' in record
    assert [name for name in os.listdir(tmp_path) if name.endswith('.tmp')] == []


def test_representation_takes_mu_of_encoder_and_resizes_grayscale_to_rgb():
    class Encoder(torch.nn.Module):
        img_resolution, img_channels, code_dim = 8, 3, 3

        def forward(self, x):
            assert x.shape[1:] == (3, 8, 8)
            return x.mean(dim=(2, 3)), torch.zeros(len(x), 3)

    images = np.full([5, 1, 32, 32], 255, dtype=np.uint8)
    codes = NetworkRepresentation(Encoder(), batch_size=2)(images)
    np.testing.assert_allclose(codes, np.ones([5, 3]))
    x = images_to_network_input(np.zeros([1, 1, 4, 4], np.uint8), 4, 1, 'cpu')
    assert float(x.min()) == -1.0


def test_calc_metrics_cli_prints_all_five_for_a_vae_snapshot(tmp_path):
    pkl = os.path.join(tmp_path, 'vae-snapshot-000001.pkl')
    with open(pkl, 'wb') as f:
        pickle.dump(dict(E=pooled_encoder()), f)
    options = json.dumps(dict(num_train=150, num_test=100, num_eval=40, num_variance_estimate=150))
    result = CliRunner().invoke(calc_metrics.main, ['--network', pkl, '--metrics=factorvae,mig,dci,sap,betavae',
                                                    '--data=dsprites', '--options', options, '--quiet',
                                                    '--device=cpu'])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith('{')]
    assert [r['metric'] for r in records] == ['factorvae', 'mig', 'dci', 'sap', 'betavae']
    for name in ('factorvae', 'mig', 'dci', 'sap', 'betavae'):
        assert os.path.isfile(os.path.join(tmp_path, f'metric-{name}.jsonl'))


def test_calc_metrics_cli_rejects_unknown_metric_and_option(tmp_path):
    result = CliRunner().invoke(calc_metrics.main, ['--network=x.pkl', '--metrics=mig,bogus'])
    assert result.exit_code != 0 and 'unknown metric(s) bogus' in result.output
    result = CliRunner().invoke(calc_metrics.main, ['--network=x.pkl', '--metrics=mig', '--options={"num_eval": 3}'])
    assert result.exit_code != 0 and 'apply to none of the chosen metrics' in result.output
    result = CliRunner().invoke(calc_metrics.main, ['--network', os.path.join(tmp_path, 'missing.pkl'), '--metrics=mig'])
    assert result.exit_code != 0 and 'does not exist' in result.output
