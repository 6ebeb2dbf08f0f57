"""A handful of the user mistakes of docs/ERRORS.md: each ends in one sentence, no traceback, nothing written."""

import os
import pickle

import pytest
from click.testing import CliRunner

import calc_metrics
import dataset_tool
import export
import generate
import train


@pytest.fixture
def files(tmp_path):
    (tmp_path / 'list.pkl').write_bytes(pickle.dumps([1, 2, 3]))
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'afile').write_text('x')
    return tmp_path


CASES = [
    (train.main, ['--data=digits', '--gpus=3', '--batch=8'], '--batch=8 must be divisible by --gpus=3.'),
    (train.main, ['--data=digits', '--resume={t}/empty'], 'is a directory without a complete network-snapshot'),
    (train.main, ['--data=digits', '--resume={t}/list.pkl'], 'is not a network snapshot (it holds a list'),
    (train.main, ['--data=digits', '--resume=nowhere.pkl'], 'does not exist; give a network-snapshot-*.pkl'),
    (train.main, ['--data=digits', '--beta=4'], '--beta applies to the VAE configs'),
    (train.main, ['--data=digits', '--outdir={t}/afile'], 'is a file; give a directory'),
    (generate.main, ['--network={t}/list.pkl'], 'is not a network snapshot (it holds a list'),
    (generate.main, ['--network={t}/afile.pt'], 'does not exist'),
    (generate.main, ['--network={t}/list.pkl', '--device=tpu'], '--device=tpu is not a torch device name'),
    (calc_metrics.main, ['--network={t}/list.pkl', '--metrics=nonsense'], 'unknown metric(s) nonsense'),
    (dataset_tool.main, ['--source={t}/empty', '--dest={t}/out.zip'], ''),
    (export.main, ['--network={t}/list.pkl', '--dest={t}/x.pt'], 'is not a network snapshot (it holds a list'),
]


@pytest.mark.parametrize('command, args, message', CASES, ids=[f'{c.name}-{i}' for i, (c, _, _) in enumerate(CASES)])
def test_user_mistakes_end_in_one_sentence(command, args, message, files):
    args = [a.format(t=files) for a in args]
    if command is train.main and not any(a.startswith('--outdir') for a in args):
        args = [f'--outdir={files / "runs"}'] + args
    if command is generate.main:
        args = args + [f'--outdir={files / "out"}']
    result = CliRunner().invoke(command, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a ClickException, not a crash
    lines = [line for line in result.output.splitlines() if line.startswith('Error:')]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (files / 'runs').exists() and not (files / 'out').exists() and not (files / 'x.pt').exists()
    assert not (files / 'out.zip').exists()
    assert sorted(os.listdir(files)) == ['afile', 'empty', 'list.pkl']


def test_a_broken_plug_in_import_is_reported_with_its_cause(monkeypatch, tmp_path):
    """Only the plug-in's absence is quiet; a failing import inside it must not hide every preset."""
    import builtins
    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name == 'disentangle' or name.startswith('disentangle.'):
            raise ModuleNotFoundError("No module named 'some_dependency'", name='some_dependency')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', failing)
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', '--data=digits', '--cfg=idgan'])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: the disentangle/ plug-in cannot be loaded: No module named "
                                     "'some_dependency'; install what it needs (pip install -e .) or remove the "
                                     "plug-in.")
    assert os.listdir(tmp_path) == []


def test_without_the_plug_in_only_the_host_presets_remain(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def absent(name, *args, **kwargs):
        if name == 'disentangle' or name.startswith('disentangle.'):
            raise ModuleNotFoundError("No module named 'disentangle'", name='disentangle')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', absent)
    assert sorted(train._gan_configs()) == ['stylegan2'] and sorted(train._mapping_choices()) == ['mlp']
