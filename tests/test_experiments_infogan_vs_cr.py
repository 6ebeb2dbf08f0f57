"""The result assembly of experiments/infogan_vs_cr.py (the training and metric commands are the project's own)."""

import importlib.util
import json
import os

_CR_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments', 'infogan_vs_cr.py')
_cr_spec = importlib.util.spec_from_file_location('infogan_vs_cr', _CR_PATH)
cr = importlib.util.module_from_spec(_cr_spec)
_cr_spec.loader.exec_module(cr)


def test_last_tick_stats_takes_the_newest_line_holding_each_stat(tmp_path):
    lines = [{'Info/cont_mse': dict(num=16, mean=0.5), 'CR/alpha': dict(num=1, mean=0.0)},
             {'Info/cont_mse': dict(num=16, mean=0.3), 'CR/H_accuracy': dict(num=4, mean=0.6)},
             {'Info/cont_mse': dict(num=0, mean=None), 'CR/alpha': dict(num=1, mean=2.0)}]
    (tmp_path / 'stats.jsonl').write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    assert cr.last_tick_stats(str(tmp_path)) == {'Info/cont_mse': 0.3, 'CR/H_accuracy': 0.6, 'CR/alpha': 2.0}
    assert cr.last_tick_stats(str(tmp_path / 'missing')) == {}


def test_infogan_vs_cr_table_and_schedule():
    lines = cr.results_table([('InfoGAN', dict(factorvae=0.4, mig=0.0123, mig_gen=0.02, **{'Info/cont_mse': 0.31})),
                              ('CR', dict(factorvae=0.5, mig=0.05, mig_gen=0.1, **{'CR/H_accuracy': 0.9}))]).split('\n')
    assert lines[2] == '| InfoGAN | 0.400 | 0.012 | 0.020 | 0.310 | – |'
    assert lines[3] == '| CR | 0.500 | 0.050 | 0.100 | – | 0.900 |'
    assert cr.cr_start_kimg(10) == 6 and cr.cr_start_kimg(15) == 9 and cr.cr_start_kimg(3, fraction=2 / 3) == 2
