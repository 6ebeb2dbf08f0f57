"""The pure helpers of experiments/stylegenes_vs_mlp.py (no training)."""

import importlib.util
import os

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'stylegenes_vs_mlp.py')
_spec = importlib.util.spec_from_file_location('stylegenes_vs_mlp', _PATH)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def test_train_commands_differ_only_in_the_mapping():
    mlp, genes = (exp.train_command('python', 'runs/x', 8, 0, extra) for _, _, extra, _ in exp.MODELS)
    assert ' '.join(mlp) == ('python train.py --outdir=runs/x --data=dsprites --cbase=2048 --cmax=32 --map=2 --batch=8 '
                             '--kimg=8 --tick=1 --snap=100 --workers=0 --seed=0')
    assert [a for a in genes if a not in mlp] == ['--mapping=genes', '--genes=16', '--variants=32']


def test_shapes3d_commands_change_only_the_data():
    for _, _, extra, _ in exp.MODELS:
        dsprites = exp.train_command('python', 'runs/x', 8, 0, extra)
        shapes3d = exp.train_command('python', 'runs/x', 8, 0, extra, data='shapes3d')
        assert [(a, b) for a, b in zip(dsprites, shapes3d) if a != b] == [('--data=dsprites', '--data=shapes3d')]


def test_count_parameters_counts_parameters_not_buffers():
    module = torch.nn.Linear(10, 4)
    module.register_buffer('w_avg', torch.zeros(100))
    assert exp.count_parameters(module) == 44


def test_tile_places_images_row_major(tmp_path):
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f'{i}.png'))
        Image.fromarray(np.full([2, 3, 3], 10 * i, np.uint8)).save(paths[-1])
    out = tmp_path / 'grid.png'
    exp.tile(paths, str(out), columns=2)
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (6, 6, 3)
    assert pixels[0, 0, 0] == 0 and pixels[0, 3, 0] == 10 and pixels[2, 0, 0] == 20 and pixels[4, 0, 0] == 40
    assert (pixels[4:, 3:] == 255).all()   # the missing sixth image: background


def test_results_table_rows():
    mlp = dict(kimg=8, fd_oracle=91.24, kid_oracle=1.5, pr_oracle_precision=0.3, pr_oracle_recall=0.1, mig_gen=0.01,
               dci_gen_disentanglement=0.1, dci_gen_completeness=0.2, dci_gen_informativeness_test=0.3,
               mapping_parameters=526336, G_parameters=1234567, snapshot_mb=15.04, train_minutes=6.25)
    lines = exp.results_table([('MLP', mlp), ('genes', dict(kimg=8, fd_oracle=80.0, mapping_parameters=16384))]).split('\n')
    assert lines[2] == ('| MLP | 8 | 91.2 | 1.500 | 0.300 / 0.100 | 0.010 | 0.100 / 0.200 / 0.300 | 526,336 | 1,234,567 '
                        '| 15.0 | 6.2 |')
    assert lines[3] == '| genes | 8 | 80.0 | – | – | – | – | 16,384 | – | – | – |'


def test_cli_refuses_a_missing_snapshot(tmp_path):
    result = CliRunner().invoke(exp.main, [f'--mlp={tmp_path}/none.pkl', f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and 'none.pkl is not a file' in result.output
