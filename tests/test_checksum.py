"""Checksums of snapshots and exports: written with every file, verified on load, skippable."""

import errno
import hashlib
import io
import os
import pickle

import pytest
import torch

import dnnlib
from networks.stylegan2 import Generator
from networks.vae import Encoder
from torch_utils import misc, safe_export
from training import fault
from training.latent import GaussianLatent
from training.snapshot import SnapshotError, load_network_pkl
from training.vae_snapshot import VAESnapshotError, load_vae_snapshot

RES = 16
DAMAGED = ('is damaged: its checksum does not match the one written with it, so the file was changed after it '
           'was written; use another {what}, or set SG2D_SKIP_CHECKSUM=1 to load it anyway.')


@pytest.fixture(autouse=True)
def _checked(monkeypatch):
    monkeypatch.delenv('SG2D_SKIP_CHECKSUM', raising=False)  # a user's setting must not hide a failure here


def small_snapshot():
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=1,
                  mapping_kwargs=dnnlib.EasyDict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return dict(G_ema=G, latent=GaussianLatent(z_dim=8),
                training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.BuiltinDataset', path='digits'))


def biggest_tensor(module):
    """(name, tensor) of the module's largest parameter or buffer: its bytes occur once in a file."""
    return max(module.state_dict().items(), key=lambda item: item[1].numel())


def flip_bytes_of(path, tensor, count=64):
    """Invert `count` bytes in the middle of `tensor`'s raw bytes inside the file at `path`."""
    data = bytearray(path.read_bytes())
    needle = tensor.detach().cpu().contiguous().numpy().tobytes()
    assert len(needle) >= 2 * count and data.count(needle) == 1  # found, and unambiguously
    start = data.find(needle) + len(needle) // 2 - count // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def tensors_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# Pickles.

def test_snapshot_ends_with_the_sha256_of_its_pickle_and_plain_pickle_load_still_reads_it(tmp_path):
    path = tmp_path / 'network-snapshot-000000.pkl'
    snap = small_snapshot()
    misc.atomic_pickle_dump(snap, path)
    raw = path.read_bytes()
    trailer = raw[-misc.CHECKSUM_TRAILER_SIZE:]
    body = raw[:-misc.CHECKSUM_TRAILER_SIZE]
    assert trailer == b'\nSG2D-SHA256 ' + hashlib.sha256(body).hexdigest().encode() + b'\n'
    assert body.endswith(pickle.STOP)

    # What the official StyleGAN2-ADA loader does (a bare pickle.load): it stops at STOP.
    with open(path, 'rb') as f:
        data = pickle.load(f)
        assert f.read() == trailer
    assert isinstance(data, dict) and data['training_set_kwargs']['path'] == 'digits'
    assert tensors_equal(data['G_ema'].state_dict(), snap['G_ema'].state_dict())

    assert fault.snapshot_problem(path) is None
    loaded = load_network_pkl(str(path))
    assert tensors_equal(loaded['G_ema'].state_dict(), snap['G_ema'].state_dict())


def test_flipped_tensor_bytes_are_refused_naming_the_file_unless_skipped(tmp_path, monkeypatch):
    path = tmp_path / 'network-snapshot-000000.pkl'
    snap = small_snapshot()
    name, tensor = biggest_tensor(snap['G_ema'])
    misc.atomic_pickle_dump(snap, path)
    flip_bytes_of(path, tensor)

    with pytest.raises(SnapshotError) as err:
        load_network_pkl(str(path))
    assert str(err.value) == f'{path} ' + DAMAGED.format(what='snapshot')
    with open(path, 'rb') as f:  # an open file gets the same check, named by its path
        with pytest.raises(SnapshotError, match='is damaged') as err:
            load_network_pkl(f)
        assert str(err.value).startswith(f'{path} is damaged')
    assert fault.snapshot_problem(path) == fault.CHECKSUM_MISMATCH

    # The damage is real (the file still unpickles, to other weights), and the escape hatch loads it.
    monkeypatch.setenv('SG2D_SKIP_CHECKSUM', '1')
    assert fault.snapshot_problem(path) is None
    loaded = load_network_pkl(str(path))
    damaged, original = loaded['G_ema'].state_dict(), snap['G_ema'].state_dict()
    assert not torch.equal(damaged[name].nan_to_num(), original[name])
    assert all(torch.equal(damaged[k], original[k]) for k in original if k != name)


def test_damaged_vae_snapshot_is_refused_naming_the_file(tmp_path):
    path = tmp_path / 'vae-snapshot-000000.pkl'
    torch.manual_seed(0)
    E = Encoder(img_resolution=RES, img_channels=1, code_dim=3)
    misc.atomic_pickle_dump(dict(E=E), path)
    assert load_vae_snapshot(str(path))['E'].code_dim == 3
    flip_bytes_of(path, biggest_tensor(E)[1])
    with pytest.raises(VAESnapshotError) as err:
        load_vae_snapshot(str(path))
    assert str(err.value) == f'{path} ' + DAMAGED.format(what='snapshot')


def test_resume_from_a_run_directory_skips_a_damaged_snapshot_with_a_warning(tmp_path):
    snap = small_snapshot()
    older, newer = tmp_path / 'network-snapshot-000001.pkl', tmp_path / 'network-snapshot-000002.pkl'
    misc.atomic_pickle_dump(snap, older)
    misc.atomic_pickle_dump(snap, newer)
    assert fault.newest_complete_snapshot(str(tmp_path)) == str(newer)
    flip_bytes_of(newer, biggest_tensor(snap['G_ema'])[1])
    with pytest.warns(fault.IncompleteSnapshotWarning) as record:
        assert fault.newest_complete_snapshot(str(tmp_path)) == str(older)
    (warning,) = record
    assert str(warning.message) == f'skipping {newer}: it is truncated or corrupt ({fault.CHECKSUM_MISMATCH}).'


def test_foreign_pickles_without_a_trailer_load_unverified(tmp_path):
    path = tmp_path / 'official.pkl'
    path.write_bytes(pickle.dumps({'G_ema': None, 'kimg': 3}, protocol=2))
    assert fault.snapshot_problem(path) is None
    assert load_network_pkl(str(path)) == {'G_ema': None, 'kimg': 3}


def test_trailers_that_do_not_fit_are_refused(tmp_path):
    good = tmp_path / 'good.pkl'
    misc.atomic_pickle_dump({'kimg': 7}, good)
    raw = good.read_bytes()
    body = raw[:-misc.CHECKSUM_TRAILER_SIZE]
    assert load_network_pkl(str(good)) == {'kimg': 7}

    wrong = tmp_path / 'wrong-digest.pkl'
    wrong.write_bytes(body + misc.checksum_trailer(hashlib.sha256(body + b'x').hexdigest()))
    with pytest.raises(SnapshotError) as err:
        load_network_pkl(str(wrong))
    assert str(err.value) == f'{wrong} ' + DAMAGED.format(what='snapshot')

    cut = tmp_path / 'cut.pkl'
    cut.write_bytes(raw[:-10])
    with pytest.raises(SnapshotError) as err:
        load_network_pkl(str(cut))
    assert str(err.value) == (f'{cut} is truncated or not a pickle (its {len(raw) - 10} bytes end inside the checksum '
                              f'that follows the pickle); use another snapshot.')

    extra = tmp_path / 'extra.pkl'
    extra.write_bytes(raw + b'junk')
    assert fault.snapshot_problem(extra) == f'{misc.CHECKSUM_TRAILER_SIZE + 4} stray bytes follow the end of the pickle'
    assert fault.pickle_problem(body + b'\x00' * misc.CHECKSUM_TRAILER_SIZE) == \
        f'{misc.CHECKSUM_TRAILER_SIZE} stray bytes follow the end of the pickle'


def test_skip_checksum_setting_values(monkeypatch):
    for value, skipped in [('1', True), ('yes', True), ('0', False), ('', False), ('false', False)]:
        monkeypatch.setenv('SG2D_SKIP_CHECKSUM', value)
        assert misc.checksum_skipped() is skipped, value


# ----------------------------------------------------------------------------------------------
# Exports.

def write_export(path):
    snap = small_snapshot()
    export, _skipped = safe_export.snapshot_to_export(snap)
    safe_export.save_export(export, path)
    return snap


def test_export_carries_a_checksum_of_its_content_and_loads(tmp_path):
    path = tmp_path / 'net.pt'
    snap = write_export(path)
    raw = torch.load(path, weights_only=True)
    assert raw['version'] == safe_export.VERSION
    assert len(raw['checksum']) == 64 and raw['checksum'] == safe_export.content_checksum(raw)
    loaded = load_network_pkl(str(path))
    assert tensors_equal(loaded['G_ema'].state_dict(), snap['G_ema'].state_dict())

    # The checksum follows every part of the content, not only the tensors' bytes.
    base = safe_export.content_checksum(raw)

    def reinterpret(state, key='mapping.w_avg'):  # the same bytes as another dtype
        state[key] = state[key].view(torch.int32)

    def rename(state, key='mapping.w_avg'):
        state[key + '_'] = state.pop(key)

    variants = [
        lambda e: e['modules']['G_ema']['init_kwargs'].update(w_dim=9),
        lambda e: e['modules']['G_ema'].update(class_name='networks.stylegan2.Discriminator'),
        lambda e: e['data']['training_set_kwargs'].update(path='dsprites'),
        lambda e: reinterpret(e['modules']['G_ema']['state']),
        lambda e: rename(e['modules']['G_ema']['state']),
        lambda e: e['modules']['G_ema']['init_kwargs'].update(z_dim=8.0),  # equal value, other type
        lambda e: e['modules']['G_ema']['init_args'].append(None),
    ]
    for change in variants:
        copy = torch.load(path, weights_only=True)
        change(copy)
        assert safe_export.content_checksum(copy) != base
    reordered = torch.load(path, weights_only=True)
    reordered['modules'] = dict(reversed(list(reordered['modules'].items())))
    assert safe_export.content_checksum(reordered) == base  # canonical: dict order does not count


def test_export_with_flipped_tensor_bytes_is_refused_naming_the_file_unless_skipped(tmp_path, monkeypatch):
    path = tmp_path / 'net.pt'
    snap = write_export(path)
    name, tensor = biggest_tensor(snap['G_ema'])
    flip_bytes_of(path, tensor)  # torch.save stores tensor bytes uncompressed in its zip
    with pytest.raises(SnapshotError) as err:
        load_network_pkl(str(path))
    assert str(err.value) == f'{path} ' + DAMAGED.format(what='export')

    monkeypatch.setenv('SG2D_SKIP_CHECKSUM', '1')
    damaged = load_network_pkl(str(path))['G_ema'].state_dict()
    assert not torch.equal(damaged[name].nan_to_num(), snap['G_ema'].state_dict()[name])


def test_exports_without_a_checksum_load_and_a_wrong_one_is_refused(tmp_path):
    export, _ = safe_export.snapshot_to_export(small_snapshot())
    older = tmp_path / 'older.pt'
    torch.save({k: v for k, v in export.items() if k != 'checksum'}, older)
    assert load_network_pkl(str(older))['training_set_kwargs'].path == 'digits'

    wrong = tmp_path / 'wrong.pt'
    torch.save(dict(export, checksum='0' * 64), wrong)
    with pytest.raises(SnapshotError) as err:
        load_network_pkl(str(wrong))
    assert str(err.value) == f'{wrong} ' + DAMAGED.format(what='export')
    with pytest.raises(safe_export.ExportError, match='^it is damaged: its checksum does not match'):
        safe_export.export_to_snapshot(dict(export, checksum='0' * 64))


def test_save_export_on_a_full_disk_raises_a_plain_oserror(tmp_path, monkeypatch):
    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    export, _ = safe_export.snapshot_to_export(small_snapshot())
    monkeypatch.setattr(misc, 'open', lambda path, mode: FullDisk(path, mode.replace('b', '')), raising=False)
    with pytest.raises(OSError) as err:
        safe_export.save_export(export, tmp_path / 'net.pt')
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []  # neither the export nor a temporary file is left behind


def test_generate_names_a_damaged_snapshot_in_one_sentence(tmp_path):
    from click.testing import CliRunner

    import generate
    path = tmp_path / 'network-snapshot-000000.pkl'
    snap = small_snapshot()
    misc.atomic_pickle_dump(snap, path)
    flip_bytes_of(path, biggest_tensor(snap['G_ema'])[1])
    result = CliRunner().invoke(generate.main, [f'--network={path}', '--seeds=0', f'--outdir={tmp_path / "out"}'])
    assert result.exit_code != 0 and 'Traceback' not in result.output
    assert f'{path} ' + DAMAGED.format(what='snapshot') in result.output
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []
