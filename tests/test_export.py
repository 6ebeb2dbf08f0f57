"""export.py and weights-only loading: same images from the export, hostile files never executed."""

import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dnnlib
import export
import generate
from networks.stylegan2 import Discriminator, Generator
from networks.vae import Encoder
from torch_utils import misc, safe_export
from training.augment import AugmentPipe
from training.latent import GaussianLatent
from training.snapshot import SnapshotError, load_network_pkl

RES = 16


def run(command, args):
    result = CliRunner().invoke(command, args)
    return result.exit_code, result.output


def stylegan2_snapshot(z_dim=8):
    torch.manual_seed(0)
    G = Generator(z_dim=z_dim, c_dim=0, w_dim=8, img_resolution=RES, img_channels=1,
                  mapping_kwargs=dnnlib.EasyDict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    with torch.no_grad():  # a non-trivial w_avg, so the buffer's round trip matters for truncation
        G.mapping.w_avg.normal_()
    return dict(G=G, G_ema=G, D=Discriminator(c_dim=0, img_resolution=RES, img_channels=1, channel_base=128,
                                              channel_max=8),
                augment_pipe=AugmentPipe(xflip=1, rotate90=1), latent=GaussianLatent(z_dim=z_dim),
                training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.BuiltinDataset', path='digits'),
                resume_state=dict(rng=misc.get_rng_state(), cur_nimg=8))


def idgan_snapshot():
    from disentangle.latents import PosteriorBankLatent
    code_dim, nuisance_dim = 3, 2
    snap = stylegan2_snapshot(z_dim=code_dim + nuisance_dim)
    torch.manual_seed(1)
    G = Generator(z_dim=code_dim + nuisance_dim, c_dim=0, w_dim=8, img_resolution=RES, img_channels=1,
                  mapping_kwargs=dnnlib.EasyDict(class_name='disentangle.latents.CodeMappingNetwork',
                                                 code_dim=code_dim, num_layers=1),
                  synthesis_kwargs=dict(channel_base=128, channel_max=8))
    latent = PosteriorBankLatent(code_dim=code_dim, nuisance_dim=nuisance_dim, bank_size=10, verbose=False)
    latent.set_bank(torch.randn([10, code_dim]), torch.randn([10, code_dim]) - 1)  # bank grows from 0 rows
    snap.update(G=G, G_ema=G, latent=latent, E=Encoder(img_resolution=RES, img_channels=1, code_dim=code_dim))
    return snap


@pytest.mark.parametrize('make', [stylegan2_snapshot, idgan_snapshot], ids=['stylegan2', 'idgan'])
def test_export_gives_identical_images_and_loads_with_weights_only(make, tmp_path):
    pkl, pt = tmp_path / 'network-snapshot-000000.pkl', tmp_path / 'net.pt'
    snap = make()
    misc.atomic_pickle_dump(snap, str(pkl))
    code, output = run(export.main, [f'--network={pkl}', f'--dest={pt}'])
    assert code == 0, output
    assert 'left out resume_state' in output

    raw = torch.load(pt, weights_only=True)  # plain torch, no project code needed to read it
    assert set(raw['modules']) == {k for k in snap if k not in ('training_set_kwargs', 'resume_state')}
    assert raw['modules']['G_ema']['class_name'] == 'networks.stylegan2.Generator'
    assert raw['data']['training_set_kwargs']['path'] == 'digits'

    for network, sub in ((pkl, 'a'), (pt, 'b')):
        code, output = run(generate.main, [f'--network={network}', '--seeds=0-2', '--trunc=0.7',
                                           f'--outdir={tmp_path / sub}'])
        assert code == 0, output
    for seed in range(3):
        name = f'seed{seed:04d}.png'
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()

    loaded = load_network_pkl(str(pt))
    for key in raw['modules']:
        for (name, a), (_, b) in zip(misc.named_params_and_buffers(snap[key]), misc.named_params_and_buffers(loaded[key])):
            assert torch.equal(a, b), f'{key}.{name}'
    if 'E' in snap:
        assert loaded['latent'].bank_mu.shape == (10, 3)
        assert torch.equal(loaded['latent'].sample_seed(4).z, snap['latent'].sample_seed(4).z)


class _CreatesFile:
    """Unpickling this runs open(path, 'w'): the simplest proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.mark.parametrize('layout', ['raw-pickle', 'torch-save'])
def test_hostile_files_are_never_executed_by_the_safe_path(layout, tmp_path):
    marker = tmp_path / 'pwned.txt'
    evil = tmp_path / 'evil.pt'
    payload = {'G_ema': _CreatesFile(marker)}
    if layout == 'raw-pickle':
        evil.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, evil)
    code, output = run(generate.main, [f'--network={evil}', '--seeds=0', f'--outdir={tmp_path / "out"}'])
    assert code != 0 and 'is not a weights-only file' in output and 'Traceback' not in output
    code, output = run(calc_metrics.main, [f'--network={evil}', '--metrics=mig', '--data=dsprites'])
    assert code != 0 and 'is not a weights-only file' in output
    assert not marker.exists()
    # The unsafe path would have run it: the test's payload is real.
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()


@pytest.mark.parametrize('class_name', ['os.system', 'builtins.eval', 'training.dataset.os.system',
                                        'torch.nn.Linear', 'networks.stylegan2.np.load', 'subprocess.Popen'])
def test_exports_naming_classes_outside_the_allow_list_are_refused(class_name, tmp_path):
    marker = tmp_path / 'pwned.txt'
    spec = dict(class_name=class_name, init_args=[f'touch {marker}'], init_kwargs={}, state={})
    path = tmp_path / 'crafted.pt'
    torch.save(dict(format=safe_export.FORMAT, version=safe_export.VERSION, modules={'G_ema': spec}, data={}), path)
    with pytest.raises(SnapshotError, match='not in this project|not a persistent network class|does not exist'):
        load_network_pkl(str(path))
    assert not marker.exists()


def test_export_refuses_objects_a_weights_only_file_cannot_hold(tmp_path):
    snap = stylegan2_snapshot()
    snap['latent']._init_kwargs['z_dim'] = np.int64(8)  # a numpy scalar would need code to load
    with pytest.raises(safe_export.ExportError, match=r'latent\.init_kwargs\.z_dim is a int64'):
        safe_export.snapshot_to_export(snap)


def test_export_cli_mistakes_are_one_sentence(tmp_path):
    pkl = tmp_path / 'net.pkl'
    misc.atomic_pickle_dump(stylegan2_snapshot(), str(pkl))
    (tmp_path / 'taken.pt').write_bytes(b'x')
    for args, message in [([f'--network={pkl}', f'--dest={tmp_path / "x.pkl"}'], 'must end in .pt'),
                          ([f'--network={pkl}', f'--dest={tmp_path / "taken.pt"}'], 'pass --force'),
                          ([f'--network={pkl}', f'--dest={tmp_path / "no" / "x.pt"}'], 'does not exist; create it'),
                          ([f'--network={tmp_path / "missing.pkl"}', f'--dest={tmp_path / "y.pt"}'], 'does not exist')]:
        code, output = run(export.main, args)
        assert code != 0 and message in output and 'Traceback' not in output, output
    assert not os.path.exists(tmp_path / 'y.pt')
