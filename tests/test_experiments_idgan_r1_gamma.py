"""The helpers of experiments/idgan_r1_gamma.py (no training: stats and grids are written by hand)."""

import importlib.util
import json
import os
import sys

import click
import pytest
from PIL import Image

_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments')
sys.path.insert(0, _DIR)
_spec = importlib.util.spec_from_file_location('idgan_r1_gamma', os.path.join(_DIR, 'idgan_r1_gamma.py'))
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def test_gan_command_sets_the_r1_weight_and_the_row_widths():
    cmd = exp.gan_command('python', 'o', 'v.pkl', 10, 10, 0.001, 0)
    assert '--gamma=10' in cmd and '--distill-weight=0.001' in cmd and '--kimg=10' in cmd
    assert cmd[2:6] == ['--outdir=o', '--data=dsprites', '--cfg=idgan', '--vae=v.pkl']
    assert '--cbase=2048' in cmd and '--batch=8' in cmd and cmd[-1] == '--seed=0'


def test_final_recovery_mse_is_the_last_reported_value(tmp_path):
    lines = [{'IDGAN/recovery_mse': {'num': 8, 'mean': 1.5}}, {'Progress/kimg': {'mean': 1}},
             {'IDGAN/recovery_mse': {'num': 8, 'mean': 0.25}}, {'Timing/total_sec': {'mean': 3}}]
    (tmp_path / 'stats.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))
    assert exp.final_recovery_mse(str(tmp_path)) == 0.25
    (tmp_path / 'stats.jsonl').write_text(json.dumps({'Loss/G/loss': {'mean': 1}}) + '\n')
    with pytest.raises(click.ClickException, match='no IDGAN/recovery_mse'):
        exp.final_recovery_mse(str(tmp_path))


def test_crop_fakes_takes_the_newest_grid(tmp_path):
    Image.new('L', (64 * 16, 64 * 12), 10).save(tmp_path / 'fakes000005.png')
    Image.new('L', (64 * 16, 64 * 12), 200).save(tmp_path / 'fakes000010.png')
    Image.new('L', (64, 64), 0).save(tmp_path / 'fakes_init.png')
    out = exp.crop_fakes(str(tmp_path), str(tmp_path / 'crop.png'))
    image = Image.open(out)
    assert image.size == (8 * 64, 2 * 64) and image.getpixel((5, 5)) == 200


def test_table_and_option_checks():
    text = exp.table([(0.1, dict(fd_oracle=738.19, pr_oracle_precision=0.0052, pr_oracle_recall=0.0014,
                                 mig_gen=0.0484, recovery_mse=1.2063))])
    assert text.splitlines()[2] == '| 0.1 | 738.2 | 0.005 | 0.001 | 0.048 | 1.206 |'
    with pytest.raises(click.BadParameter):
        exp._parse_gammas(None, None, '0.1,x')
    with pytest.raises(click.BadParameter):
        exp._parse_gammas(None, None, '-1')
    assert exp._parse_gammas(None, None, '0.1, 10') == [0.1, 10.0]
    with pytest.raises(click.BadParameter, match='GAMMA=PATH'):
        exp._parse_gans(None, None, ['10=/no/such.pkl'])
