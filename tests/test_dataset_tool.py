"""dataset_tool.py: output layout, transforms, and one clear error (with --dest untouched) for bad input."""

import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from training.dataset import ImageFolderDataset
from training.procedural import get_builtin


def run_tool(*args):
    return CliRunner().invoke(dataset_tool.main, list(args), catch_exceptions=False)


def save_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def random_image(height, width, channels=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(height, width, channels), dtype=np.uint8)


def read_zip_image(path, fname):
    with zipfile.ZipFile(path) as archive, archive.open(fname) as file, PIL.Image.open(file) as image:
        return np.asarray(image)


# ----------------------------------------------------------------------------
# What gets written.


def test_builtin_subset_takes_the_first_images_in_index_order(tmp_path):
    dest = str(tmp_path / 'dsprites.zip')
    result = run_tool('--source=dsprites', f'--dest={dest}', '--max-images=5')
    assert result.exit_code == 0, result.output
    assert 'Wrote 5 images' in result.output and 'dataset_tool: 5/5' in result.output
    with zipfile.ZipFile(dest) as archive:
        assert sorted(archive.namelist()) == ['00000/img00000000.png', '00000/img00000001.png', '00000/img00000002.png',
                                              '00000/img00000003.png', '00000/img00000004.png', 'dataset.json']
        metadata = json.loads(archive.read('dataset.json'))
    source = get_builtin('dsprites')
    assert metadata['labels'] is None and metadata['procedural'] == 'dsprites'
    assert metadata['factor_names'] == list(source.factor_names)
    assert metadata['factor_sizes'] == list(source.factor_sizes)
    assert metadata['factors'][4] == ['00000/img00000004.png', source.index_to_factors([4])[0].tolist()]
    np.testing.assert_array_equal(read_zip_image(dest, '00000/img00000004.png'), source.images([4])[0, 0])


def test_shuffle_takes_a_seeded_subset_kept_in_index_order(tmp_path):
    factors = []
    for name in ('a.zip', 'b.zip'):
        dest = str(tmp_path / name)
        assert run_tool('--source=dsprites', f'--dest={dest}', '--max-images=20', '--shuffle', '--seed=4').exit_code == 0
        factors.append(np.array([row for _fname, row in json.loads(zipfile.ZipFile(dest).read('dataset.json'))['factors']]))
    np.testing.assert_array_equal(factors[0], factors[1])
    indices = get_builtin('dsprites').factors_to_index(factors[0])
    expected = np.sort(np.random.RandomState(4).permutation(737280)[:20])
    np.testing.assert_array_equal(indices, expected)


def test_images_are_split_into_folders_of_1000(tmp_path):
    dest = str(tmp_path / 'folder-dest')
    assert run_tool('--source=dsprites', f'--dest={dest}', '--max-images=1001').exit_code == 0
    assert sorted(os.listdir(dest)) == ['00000', '00001', 'dataset.json']
    assert len(os.listdir(os.path.join(dest, '00000'))) == 1000
    assert os.listdir(os.path.join(dest, '00001')) == ['img00001000.png']


def test_builtin_resolution_option_resizes(tmp_path):
    dest = str(tmp_path / 'small.zip')
    assert run_tool('--source=dsprites', f'--dest={dest}', '--max-images=2', '--resolution=16').exit_code == 0
    image = read_zip_image(dest, '00000/img00000001.png')
    expected = PIL.Image.fromarray(get_builtin('dsprites').images([1])[0, 0]).resize((16, 16), PIL.Image.LANCZOS)
    np.testing.assert_array_equal(image, np.asarray(expected))


def test_user_images_are_resized_with_lanczos_and_keep_labels(tmp_path):
    source = tmp_path / 'src'
    arrays = [random_image(24, 24, seed=i) for i in range(3)]
    for i, array in enumerate(arrays):
        save_png(str(source / 'sub' / f'{i}.png'), array)
    (source / 'dataset.json').write_text(json.dumps({'labels': [[f'sub/{i}.png', [i, 0.5]] for i in range(3)]}))
    dest = str(tmp_path / 'out.zip')
    assert run_tool(f'--source={source}', f'--dest={dest}', '--resolution=16').exit_code == 0
    dataset = ImageFolderDataset(dest, use_labels=True)
    expected = np.asarray(PIL.Image.fromarray(arrays[2]).resize((16, 16), PIL.Image.LANCZOS))
    np.testing.assert_array_equal(dataset[2][0], expected.transpose(2, 0, 1))
    np.testing.assert_array_equal(dataset[2][1], np.array([2, 0.5], dtype=np.float32))


def test_center_crop_takes_the_central_square(tmp_path):
    array = random_image(8, 16)
    save_png(str(tmp_path / 'src' / 'wide.png'), array)
    dest = str(tmp_path / 'out.zip')
    assert run_tool(f'--source={tmp_path / "src"}', f'--dest={dest}', '--transform=center-crop').exit_code == 0
    np.testing.assert_array_equal(read_zip_image(dest, '00000/img00000000.png'), array[:, 4:12])


def test_center_crop_wide_letterboxes_a_2_to_1_band(tmp_path):
    array = random_image(16, 16)
    save_png(str(tmp_path / 'src' / 'square.png'), array)
    dest = str(tmp_path / 'out.zip')
    assert run_tool(f'--source={tmp_path / "src"}', f'--dest={dest}', '--transform=center-crop-wide').exit_code == 0
    image = read_zip_image(dest, '00000/img00000000.png')
    assert image.shape == (16, 16, 3)
    assert (image[:4] == 0).all() and (image[12:] == 0).all()
    expected_band = PIL.Image.fromarray(array[4:12]).resize((16, 8), PIL.Image.LANCZOS)
    np.testing.assert_array_equal(image[4:12], np.asarray(expected_band))


def test_grayscale_stays_grayscale_and_rgba_becomes_rgb(tmp_path):
    save_png(str(tmp_path / 'gray' / 'g.png'), random_image(8, 8, channels=1))
    rgba = random_image(8, 8, channels=4)
    save_png(str(tmp_path / 'rgba' / 'c.png'), rgba)
    assert run_tool(f'--source={tmp_path / "gray"}', f'--dest={tmp_path / "g.zip"}').exit_code == 0
    assert run_tool(f'--source={tmp_path / "rgba"}', f'--dest={tmp_path / "c.zip"}').exit_code == 0
    assert read_zip_image(str(tmp_path / 'g.zip'), '00000/img00000000.png').shape == (8, 8)
    np.testing.assert_array_equal(read_zip_image(str(tmp_path / 'c.zip'), '00000/img00000000.png'), rgba[:, :, :3])


def test_grayscale_images_among_colour_ones_are_written_as_rgb(tmp_path):
    gray = random_image(8, 8, channels=1, seed=1)
    save_png(str(tmp_path / 'mix' / 'a.png'), gray)
    save_png(str(tmp_path / 'mix' / 'b.png'), random_image(8, 8, channels=3, seed=2))
    assert run_tool(f'--source={tmp_path / "mix"}', f'--dest={tmp_path / "m.zip"}').exit_code == 0
    np.testing.assert_array_equal(read_zip_image(str(tmp_path / 'm.zip'), '00000/img00000000.png'),
                                  np.repeat(gray, 3, axis=2))


def test_a_zip_source_is_rewritten_with_its_factors(tmp_path):
    first, second = str(tmp_path / 'a.zip'), str(tmp_path / 'b-folder')
    assert run_tool('--source=dsprites', f'--dest={first}', '--max-images=3', '--shuffle').exit_code == 0
    assert run_tool(f'--source={first}', f'--dest={second}', '--resolution=32').exit_code == 0
    original, resized = ImageFolderDataset(first), ImageFolderDataset(second)
    assert resized.image_shape == [1, 32, 32] and resized.factor_sizes == original.factor_sizes
    np.testing.assert_array_equal(resized.get_factors(2), original.get_factors(2))
    np.testing.assert_array_equal(resized.sample_from_factors(resized.get_factors(2)[None]), resized[2][0][None])


def test_an_existing_zip_dest_is_replaced_and_an_empty_folder_is_filled(tmp_path):
    dest = tmp_path / 'out.zip'
    dest.write_bytes(b'old')
    assert run_tool('--source=dsprites', f'--dest={dest}', '--max-images=1').exit_code == 0
    assert zipfile.is_zipfile(str(dest))
    folder = tmp_path / 'empty'
    folder.mkdir()
    assert run_tool('--source=dsprites', f'--dest={folder}', '--max-images=1').exit_code == 0
    assert os.path.isfile(str(folder / '00000' / 'img00000000.png'))
    assert sorted(os.listdir(tmp_path)) == ['empty', 'out.zip']  # No temp files left.


# ----------------------------------------------------------------------------
# Bad input: exit code != 0, exactly one "Error:" line, no traceback, --dest untouched.


def assert_one_clear_error(result, *fragments):
    assert result.exit_code != 0
    error_lines = [line for line in result.output.splitlines() if line.startswith('Error:')]
    assert len(error_lines) == 1, result.output
    assert 'Traceback' not in result.output
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def make_folder(tmp_path, name, shapes):
    folder = tmp_path / name
    folder.mkdir()
    for i, shape in enumerate(shapes):
        save_png(str(folder / f'{i}.png'), random_image(*shape, seed=i))
    return str(folder)


def corrupt_zip(tmp_path):
    path = tmp_path / 'corrupt.zip'
    path.write_bytes(b'PK\x03\x04' + b'\x00' * 64)
    return str(path)


def empty_folder(tmp_path):
    (tmp_path / 'empty').mkdir()
    return str(tmp_path / 'empty')


def text_only_folder(tmp_path):
    (tmp_path / 'texts').mkdir()
    (tmp_path / 'texts' / 'readme.txt').write_text('no images here')
    (tmp_path / 'texts' / 'data.csv').write_text('1,2,3')
    return str(tmp_path / 'texts')


BAD_INPUTS = {
    'missing source': (lambda tmp: str(tmp / 'does-not-exist'), [], ['does not exist']),
    'empty folder': (empty_folder, [], ['is empty']),
    'only non-image files': (text_only_folder, [], ['2 file(s) but no images']),
    'mixed sizes': (lambda tmp: make_folder(tmp, 'mixed', [(8, 8), (16, 16)]), [], ['differ in size', '--resolution']),
    'non-square': (lambda tmp: make_folder(tmp, 'wide', [(8, 16)]), [], ['not square', '--transform']),
    'not a power of two': (lambda tmp: make_folder(tmp, 'odd', [(12, 12)]), [], ['power-of-two', '--resolution=8']),
    'corrupt zip': (corrupt_zip, [], ['not a readable zip']),
    'max-images 0': (lambda tmp: 'dsprites', ['--max-images=0'], ['--max-images must be at least 1']),
    'max-images negative': (lambda tmp: 'dsprites', ['--max-images=-3'], ['--max-images must be at least 1, got -3']),
    'resolution not a power of two': (lambda tmp: 'dsprites', ['--resolution=100'], ['power of two', 'got 100']),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_fails_with_one_clear_line_and_keeps_dest(case, tmp_path):
    make_source, extra_args, fragments = BAD_INPUTS[case]
    source = make_source(tmp_path)
    old_dest = tmp_path / 'kept.zip'
    old_dest.write_bytes(b'precious bytes \x00\x01')
    result = run_tool(f'--source={source}', f'--dest={old_dest}', '--max-images=3', *extra_args)
    assert_one_clear_error(result, *fragments)
    assert old_dest.read_bytes() == b'precious bytes \x00\x01'
    new_dest = tmp_path / 'out' / 'new.zip'
    result = run_tool(f'--source={source}', f'--dest={new_dest}', '--max-images=3', *extra_args)
    assert_one_clear_error(result, *fragments)
    assert not os.path.exists(str(tmp_path / 'out'))
    assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_a_non_empty_dest_folder_is_refused(tmp_path):
    dest = tmp_path / 'taken'
    dest.mkdir()
    (dest / 'mine.txt').write_text('keep me')
    result = run_tool('--source=dsprites', f'--dest={dest}', '--max-images=1')
    assert_one_clear_error(result, 'already exists and is not empty')
    assert os.listdir(dest) == ['mine.txt'] and (dest / 'mine.txt').read_text() == 'keep me'


def test_a_failure_while_writing_removes_the_temp_file(tmp_path):
    source = tmp_path / 'src'
    for i in range(3):
        save_png(str(source / f'{i}.png'), random_image(8, 8, seed=i))
    data = (source / '2.png').read_bytes()
    (source / '2.png').write_bytes(data[:len(data) // 2])  # Header passes the scan; pixels are cut off.
    for dest in (tmp_path / 'out' / 'kept.zip', tmp_path / 'out' / 'folder'):
        os.makedirs(str(tmp_path / 'out'), exist_ok=True)
        if str(dest).endswith('.zip'):
            dest.write_bytes(b'previous run')
        result = run_tool(f'--source={source}', f'--dest={dest}')
        assert_one_clear_error(result, "Cannot read image '2.png'")
        assert 'dataset_tool: 2/3' in result.output or 'scanning: 3/3' in result.output
    assert os.listdir(str(tmp_path / 'out')) == ['kept.zip']
    assert (tmp_path / 'out' / 'kept.zip').read_bytes() == b'previous run'


def test_a_subprocess_run_prints_one_error_line_and_exits_non_zero(tmp_path):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(repo, 'dataset_tool.py'), f'--source={tmp_path / "nope"}',
                             f'--dest={tmp_path / "x.zip"}'], capture_output=True, text=True, cwd=repo, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith('Error: --source') and 'does not exist' in result.stderr
    assert not os.path.exists(str(tmp_path / 'x.zip'))
