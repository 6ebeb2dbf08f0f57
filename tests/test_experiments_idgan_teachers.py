"""The pure helpers and the option checks of experiments/idgan_teachers.py (no training)."""

import importlib.util
import os

import click
import pytest
from click.testing import CliRunner

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'idgan_teachers.py')
_spec = importlib.util.spec_from_file_location('idgan_teachers', _PATH)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def test_teachers_use_each_presets_default_hyper_parameter():
    from training import vae_objectives
    stated = {cfg: {opt.split('=')[0][2:]: float(opt.split('=')[1]) for opt in opts} for cfg, _, opts in exp.TEACHERS}
    # The weights; the other hyper-parameters (btcvae's TC estimator) are left at their defaults.
    weights = {cfg: {name: value for name, value in vae_objectives.get(cfg).hyper_params.items()
                     if isinstance(value, float)} for cfg in stated}
    assert stated == weights
    assert vae_objectives.get('btcvae').hyper_params['tc_estimator'] == 'mws'
    assert stated == dict(betavae=dict(beta=8.0), btcvae=dict(beta=6.0), factorvae=dict(gamma=10.0))


def test_parse_reuse_maps_cfg_to_absolute_path_and_rejects_bad_values(tmp_path):
    pkl = tmp_path / 'vae.pkl'
    pkl.write_bytes(b'x')
    assert exp.parse_reuse([f'btcvae={pkl}'], '--vae') == {'btcvae': str(pkl)}
    assert exp.parse_reuse([], '--vae') == {}
    with pytest.raises(click.BadParameter, match='not CFG=PKL'):
        exp.parse_reuse([str(pkl)], '--vae')
    with pytest.raises(click.BadParameter, match='not CFG=PKL'):
        exp.parse_reuse([f'infogan={pkl}'], '--vae')
    with pytest.raises(click.BadParameter, match='given twice'):
        exp.parse_reuse([f'betavae={pkl}', f'betavae={pkl}'], '--vae')
    with pytest.raises(click.BadParameter, match='is not a file'):
        exp.parse_reuse([f'factorvae={tmp_path / "missing.pkl"}'], '--gan')


def test_ranking_orders_best_first_and_compares_the_two_orders():
    teachers = dict(betavae=dict(encoder=dict(mig=0.03), idgan_generator=dict(mig_gen=0.05)),
                    btcvae=dict(encoder=dict(mig=0.20), idgan_generator=dict(mig_gen=0.02)),
                    factorvae=dict(encoder=dict(mig=0.10), idgan_generator=dict(mig_gen=0.04)))
    order = exp.ranking(teachers)
    assert order['by_encoder_mig'] == ['btcvae', 'factorvae', 'betavae']
    assert order['by_idgan_mig_gen'] == ['betavae', 'factorvae', 'btcvae']
    assert order['by_vae_decoder_mig_gen'] == []   # no decoder scores given
    assert not order['same_order'] and not order['same_best']
    teachers['btcvae']['idgan_generator']['mig_gen'] = 0.3
    teachers['betavae']['idgan_generator']['mig_gen'] = 0.01
    order = exp.ranking(teachers)
    assert order['same_order'] and order['same_best']
    assert exp.rank(dict(a=dict(mig=0.1), b=dict()), 'mig') == ['a']


def test_table_rows_join_encoder_and_generator_scores():
    teachers = dict(btcvae=dict(hyper_params=['--beta=6'], encoder=dict(factorvae=0.7, mig=0.15),
                                vae_decoder=dict(mig_gen=0.09), idgan_generator=dict(mig_gen=0.12, fd_oracle=40.04)))
    lines = exp.base.results_table(exp.table_rows(teachers)).split('\n')
    assert lines[2:] == ['| β-TCVAE (--beta=6): encoder; decoder | 0.700 | 0.150 | – | 0.090 | – | – | – | – |',
                         '| β-TCVAE (--beta=6): its ID-GAN | – | – | – | 0.120 | – | 40.0 | – | – |']


@pytest.mark.parametrize('args, message', [
    (['--gan=betavae={pkl}'], 'needs the --vae=betavae'),
    (['--vae=shapes={pkl}'], 'not CFG=PKL'),
    (['--vae=btcvae={missing}'], 'is not a file'),
])
def test_bad_options_fail_with_one_sentence_before_any_work(tmp_path, args, message):
    pkl = tmp_path / 'a.pkl'
    pkl.write_bytes(b'x')
    outdir = tmp_path / 'out'
    args = [a.format(pkl=pkl, missing=tmp_path / 'none.pkl') for a in args]
    result = CliRunner().invoke(exp.main, args + [f'--outdir={outdir}', f'--json={tmp_path / "r.json"}'])
    assert result.exit_code != 0
    assert message in result.output
    assert not outdir.exists() and not (tmp_path / 'r.json').exists()


def test_variant_suffix_names_each_non_default_setting():
    assert exp.variant_suffix(0.1, None, 10, 0) == ''
    assert exp.variant_suffix(0.1, 0.1, 10, 0) == '_gamma0.1'
    assert exp.variant_suffix(0.001, None, 20, 0) == '_lambda0.001_gan20kimg'
    assert exp.variant_suffix(0.01, 10, 10, 2) == '_lambda0.01_gamma10_trainseed2'
