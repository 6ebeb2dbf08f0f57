"""The pure helpers of experiments/model_centrality.py (no training: run folders and snapshots are faked)."""

import importlib.util
import json
import os

import click
import numpy as np
import pytest
from PIL import Image

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'model_centrality.py')
_spec = importlib.util.spec_from_file_location('model_centrality', _PATH)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def test_parse_seeds_ranges_lists_and_too_few():
    assert exp.parse_seeds('0-3,7,2') == [0, 1, 2, 3, 7]
    assert exp.parse_seeds(' 5 , 9-10 ') == [5, 9, 10]
    with pytest.raises(click.BadParameter, match='at least 3'):
        exp.parse_seeds('0-1')
    with pytest.raises(click.BadParameter, match='not a seed'):
        exp.parse_seeds('0-x')


def _fake_run(outdir, name, seed, kimg, beta, snaps):
    run = outdir / name
    run.mkdir()
    (run / 'training_options.json').write_text(json.dumps(dict(
        random_seed=seed, total_kimg=kimg, objective_kwargs=dict(beta=beta))))
    for k in snaps:
        (run / f'vae-snapshot-{k:06d}.pkl').write_bytes(b'x')
    return run


def test_find_finished_run_matches_seed_length_strength_and_final_snapshot(tmp_path):
    hyper = ('beta', 8.0)
    _fake_run(tmp_path, '00000-dsprites-betavae-batch64', 0, 40.0, 8.0, [0, 40])
    _fake_run(tmp_path, '00001-dsprites-betavae-batch64', 1, 40.0, 8.0, [0])        # unfinished
    _fake_run(tmp_path, '00002-dsprites-betavae-batch64', 2, 40.0, 4.0, [0, 40])    # other beta
    _fake_run(tmp_path, '00003-dsprites-btcvae-batch64', 3, 40.0, 8.0, [0, 40])     # other objective
    found = exp.find_finished_run(str(tmp_path), 'betavae', 0, 40, hyper)
    assert found == str(tmp_path / '00000-dsprites-betavae-batch64' / 'vae-snapshot-000040.pkl')
    assert exp.find_finished_run(str(tmp_path), 'betavae', 0, 20, hyper) is None
    assert exp.find_finished_run(str(tmp_path), 'betavae', 1, 40, hyper) is None
    assert exp.find_finished_run(str(tmp_path), 'betavae', 2, 40, hyper) is None
    assert exp.find_finished_run(str(tmp_path), 'betavae', 3, 40, hyper) is None
    assert exp.find_finished_run(str(tmp_path / 'missing'), 'betavae', 0, 40, hyper) is None


def test_summarize_pick_against_best_median_worst_and_spearman():
    seeds = [0, 1, 2, 3, 4, 5]
    centrality = [0.30, 0.50, 0.20, 0.40, 0.10, 0.45]
    supervised = [0.60, 0.70, 0.40, 0.80, 0.30, 0.50]
    s = exp.summarize(seeds, centrality, supervised)
    assert s['selected_seed'] == 1 and s['selected_supervised'] == 0.70
    assert s['selected_rank_by_supervised'] == 2
    assert (s['best'], s['best_seed'], s['worst'], s['worst_seed']) == (0.80, 3, 0.30, 4)
    assert s['median'] == pytest.approx(0.55)
    # ascending ranks: centrality 3,6,2,4,1,5, supervised 4,5,2,6,1,3: d^2 = 1+1+0+4+0+4 = 10 -> 1 - 6*10/210
    assert s['spearman'] == pytest.approx(1 - 60 / 210)
    assert exp.summarize(seeds, [0.2] * 6, supervised)['spearman'] is None


def test_results_table_orders_by_centrality_and_marks_the_pick():
    lines = exp.results_table([7, 8, 9], [0.2, 0.6, 0.4], [0.5, 0.3, 0.9]).split('\n')
    assert len(lines) == 5
    assert lines[2] == '| 1 (selected) | 8 | 0.600 | 0.300 | 3 |'
    assert lines[3] == '| 2 | 9 | 0.400 | 0.900 | 1 |'
    assert lines[4] == '| 3 | 7 | 0.200 | 0.500 | 2 |'


def test_matrix_image_grey_levels_follow_the_values(tmp_path):
    path = str(tmp_path / 'img' / 'm.png')
    exp.matrix_image(np.array([[1.0, 0.0], [0.5, 0.25]]), ['a', 'b'], path, cell=20)
    exp.matrix_image(np.eye(2), ['a', 'b'], str(tmp_path / 'notes.png'), cell=20, notes=['one', 'two'])
    assert Image.open(tmp_path / 'notes.png').size == (60, 60 + 2 * 14 + 8)
    pixels = np.asarray(Image.open(path).convert('L'))
    assert pixels.shape == (60, 60)
    corner = lambda i, j: int(pixels[20 + i * 20 + 1, 20 + j * 20 + 1])   # noqa: E731 (cell corner, no text there)
    assert corner(0, 0) == 0 and corner(0, 1) == 255
    assert corner(1, 0) == 128 and corner(1, 1) == 191
    assert os.listdir(tmp_path / 'img') == ['m.png']


def test_finish_writes_relative_paths_and_warns_over_budget(tmp_path, capsys):
    path = str(tmp_path / 'out.json')
    exp.finish(path, dict(snapshot=os.path.join(exp.REPO, 'runs', 'a.pkl')), '| t |', 3.0, 2.0, summary='pick 3')
    written = json.load(open(path))
    assert written.pop('machine')['precision_auto'] in ('fp32', 'bf16', 'fp16')
    assert written == dict(snapshot=os.path.join('runs', 'a.pkl'))
    out = capsys.readouterr().out
    assert '| t |' in out and 'pick 3' in out and 'longer than the stated budget of 2 minutes' in out
    exp.finish(path, dict(a=1), '| t |', 1.0, 2.0)
    assert 'warning' not in capsys.readouterr().out
