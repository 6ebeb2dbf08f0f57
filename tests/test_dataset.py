"""training/dataset.py: StyleGAN2-ADA dataset semantics, factors, built-ins and user errors."""

import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from dataset_tool import convert_dataset
from training.dataset import (
    BuiltinDataset,
    Dataset,
    DatasetError,
    ImageFolderDataset,
    dataset_kwargs,
    open_dataset,
)
from training.procedural import get_builtin

NUM_SUBSET = 200


def write_images(folder, arrays, labels=None):
    """Save uint8 [H, W, C] arrays as a0.png, a1.png, ... plus an optional dataset.json."""
    os.makedirs(folder, exist_ok=True)
    for i, array in enumerate(arrays):
        PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(os.path.join(folder, f'a{i}.png'))
    if labels is not None:
        with open(os.path.join(folder, 'dataset.json'), 'w') as file:
            json.dump({'labels': [[f'a{i}.png', label] for i, label in enumerate(labels)]}, file)
    return folder


def random_arrays(count, size=8, channels=3, seed=0):
    return list(np.random.RandomState(seed).randint(0, 256, size=(count, size, size, channels), dtype=np.uint8))


@pytest.fixture(scope='module')
def dsprites_zip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('data') / 'dsprites.zip')
    convert_dataset('dsprites', path, max_images=NUM_SUBSET, shuffle=True, seed=3)
    return path


@pytest.fixture(scope='module')
def labelled_folder(tmp_path_factory):
    arrays = random_arrays(10)
    folder = write_images(str(tmp_path_factory.mktemp('data') / 'labelled'), arrays, labels=[i % 3 for i in range(10)])
    return folder, arrays


# ----------------------------------------------------------------------------
# StyleGAN2-ADA semantics.


def test_max_size_keeps_a_seeded_sorted_subset(labelled_folder):
    folder, _ = labelled_folder
    dataset = ImageFolderDataset(folder, max_size=4, random_seed=7)
    expected = np.arange(10)
    np.random.RandomState(7).shuffle(expected)
    assert len(dataset) == 4
    assert [dataset.get_details(i).raw_idx for i in range(4)] == sorted(expected[:4].tolist())
    assert len(ImageFolderDataset(folder, max_size=100)) == 10


def test_xflip_doubles_the_dataset_with_mirrored_copies(labelled_folder):
    folder, arrays = labelled_folder
    dataset = ImageFolderDataset(folder, max_size=4, xflip=True)
    assert len(dataset) == 8
    for i in range(4):
        original, mirrored = dataset[i][0], dataset[i + 4][0]
        raw_idx = dataset.get_details(i).raw_idx
        assert dataset.get_details(i + 4).raw_idx == raw_idx and dataset.get_details(i + 4).xflip
        np.testing.assert_array_equal(original, arrays[raw_idx].transpose(2, 0, 1))
        np.testing.assert_array_equal(mirrored, original[:, :, ::-1])


def test_integer_labels_become_one_hot(labelled_folder):
    folder, _ = labelled_folder
    dataset = ImageFolderDataset(folder, use_labels=True)
    assert dataset.has_labels and dataset.has_onehot_labels
    assert dataset.label_shape == [3] and dataset.label_dim == 3
    image, label = dataset[5]
    assert label.dtype == np.float32
    np.testing.assert_array_equal(label, [0, 0, 1])
    assert image.dtype == np.uint8 and image.shape == (3, 8, 8)


def test_labels_are_zero_width_without_use_labels(labelled_folder):
    folder, _ = labelled_folder
    dataset = ImageFolderDataset(folder)
    label = dataset[0][1]
    assert label.shape == (0,) and label.dtype == np.float32
    assert not dataset.has_labels and dataset.label_shape == [0]


def test_list_labels_are_returned_as_float32(tmp_path):
    folder = write_images(str(tmp_path / 'f'), random_arrays(3), labels=[[0.5, -1.0], [2, 3], [0, 0.25]])
    dataset = ImageFolderDataset(folder, use_labels=True)
    assert not dataset.has_onehot_labels and dataset.label_shape == [2]
    np.testing.assert_array_equal(dataset.get_label(1), np.array([2, 3], dtype=np.float32))


def test_get_details_reports_raw_index_flip_label_and_factors(dsprites_zip):
    dataset = ImageFolderDataset(dsprites_zip, xflip=True)
    details = dataset.get_details(NUM_SUBSET + 3)
    assert details.raw_idx == 3 and details.xflip is True
    np.testing.assert_array_equal(details.factors, dataset.get_factors(3))
    assert details.factors.dtype == np.int64 and details.factors.shape == (5,)


def test_getitems_matches_getitem_for_builtins(tmp_path):
    dataset = BuiltinDataset('dsprites', max_size=50, xflip=True)
    indices = [0, 7, 49, 50, 99]
    batch = dataset.__getitems__(indices)
    for (image, label), idx in zip(batch, indices):
        np.testing.assert_array_equal(image, dataset[idx][0])
        assert label.shape == (0,)


def test_grayscale_stays_one_channel_and_rgba_becomes_rgb(tmp_path):
    gray = write_images(str(tmp_path / 'gray'), random_arrays(2, channels=1))
    assert ImageFolderDataset(gray).image_shape == [1, 8, 8]
    rgba = random_arrays(2, channels=4)
    folder = write_images(str(tmp_path / 'rgba'), rgba)
    dataset = ImageFolderDataset(folder)
    assert dataset.image_shape == [3, 8, 8]
    np.testing.assert_array_equal(dataset[1][0], rgba[1][:, :, :3].transpose(2, 0, 1))


# ----------------------------------------------------------------------------
# Round trips through dataset_tool.


def test_zip_from_builtin_has_the_source_images_and_factors(dsprites_zip):
    dataset = ImageFolderDataset(dsprites_zip)
    source = get_builtin('dsprites')
    assert len(dataset) == NUM_SUBSET and dataset.image_shape == [1, 64, 64]
    assert dataset.factor_names == tuple(source.factor_names)
    assert dataset.factor_sizes == tuple(source.factor_sizes)
    factors = np.stack([dataset.get_factors(i) for i in range(len(dataset))])
    images = np.stack([dataset[i][0] for i in range(len(dataset))])
    np.testing.assert_array_equal(images, source.images(source.factors_to_index(factors)))
    assert len(np.unique(source.factors_to_index(factors))) == NUM_SUBSET


def test_zip_from_labelled_builtin_keeps_images_and_labels(tmp_path):
    path = str(tmp_path / 'digits.zip')
    convert_dataset('digits', path, max_images=40)
    stored, builtin = ImageFolderDataset(path, use_labels=True), BuiltinDataset('digits', use_labels=True)
    source = get_builtin('digits')
    assert stored.image_shape == builtin.image_shape == [1, 32, 32] and not stored.has_factors
    assert stored.label_shape == builtin.label_shape == [10]
    for i in range(40):
        np.testing.assert_array_equal(stored[i][0], source.images([i])[0])
        np.testing.assert_array_equal(stored[i][0], builtin[i][0])
        assert stored.get_label(i).argmax() == source.labels([i])[0]
        np.testing.assert_array_equal(stored.get_label(i), builtin.get_label(i))


def test_zip_and_folder_from_user_folder_keep_images_and_labels(labelled_folder, tmp_path):
    folder, arrays = labelled_folder
    original = ImageFolderDataset(folder, use_labels=True)
    for dest in (str(tmp_path / 'out.zip'), str(tmp_path / 'out-folder')):
        convert_dataset(folder, dest)
        copy = ImageFolderDataset(dest, use_labels=True)
        assert len(copy) == len(original) == 10
        for i in range(10):
            np.testing.assert_array_equal(copy[i][0], arrays[i].transpose(2, 0, 1))
            np.testing.assert_array_equal(copy[i][1], original[i][1])


# ----------------------------------------------------------------------------
# Factors.


def test_sample_from_factors_of_a_builtin_is_the_renderer_output():
    dataset = BuiltinDataset('dsprites')
    factors = dataset.sample_factors(16, np.random.RandomState(0))
    np.testing.assert_array_equal(dataset.sample_from_factors(factors), get_builtin('dsprites').render(factors))


def test_sample_factors_is_uniform_over_the_grid_and_seeded(dsprites_zip):
    builtin, stored = BuiltinDataset('dsprites'), ImageFolderDataset(dsprites_zip)
    factors = builtin.sample_factors(4000, np.random.RandomState(5))
    np.testing.assert_array_equal(factors, stored.sample_factors(4000, np.random.RandomState(5)))
    assert factors.dtype == np.int64 and factors.shape == (4000, 5)
    assert factors.min() == 0 and list(factors.max(axis=0)) == [2, 5, 39, 31, 31]
    assert np.allclose(np.bincount(factors[:, 0]) / 4000, 1 / 3, atol=0.03)


def test_procedural_zip_renders_combinations_it_does_not_contain(dsprites_zip):
    dataset = ImageFolderDataset(dsprites_zip)
    source = get_builtin('dsprites')
    stored = {tuple(dataset.get_factors(i)) for i in range(len(dataset))}
    factors = np.array([f for f in source.index_to_factors(np.arange(0, 737280, 9973)) if tuple(f) not in stored])
    assert len(factors) > 50
    np.testing.assert_array_equal(dataset.sample_from_factors(factors), source.render(factors))


def test_procedural_zip_at_another_resolution_renders_like_its_images(tmp_path):
    path = str(tmp_path / 'dsprites32.zip')
    convert_dataset('dsprites', path, max_images=12, shuffle=True, resolution=32)
    dataset = ImageFolderDataset(path)
    factors = np.stack([dataset.get_factors(i) for i in range(12)])
    images = dataset.sample_from_factors(factors)
    assert images.shape == (12, 1, 32, 32)
    np.testing.assert_array_equal(images, np.stack([dataset[i][0] for i in range(12)]))


def strip_procedural(zip_path, folder):
    """Unpack a dataset zip without its 'procedural' key, so factors can only be looked up."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    metadata_path = os.path.join(folder, 'dataset.json')
    with open(metadata_path) as file:
        metadata = json.load(file)
    del metadata['procedural']
    with open(metadata_path, 'w') as file:
        json.dump(metadata, file)
    return folder


def test_lookup_returns_the_stored_image_for_each_combination(dsprites_zip, tmp_path):
    dataset = ImageFolderDataset(strip_procedural(dsprites_zip, str(tmp_path / 'lookup')))
    order = [17, 3, 3, 150]
    factors = np.stack([dataset.get_factors(i) for i in order])
    expected = np.stack([dataset[i][0] for i in order])
    np.testing.assert_array_equal(dataset.sample_from_factors(factors), expected)
    np.testing.assert_array_equal(dataset.sample_from_factors(factors, np.random.RandomState(0)), expected)


def test_lookup_picks_among_duplicates_at_random_or_the_first_without_random_state(tmp_path):
    arrays = random_arrays(4)
    folder = write_images(str(tmp_path / 'dups'), arrays)
    with open(os.path.join(folder, 'dataset.json'), 'w') as file:
        json.dump({'factors': [[f'a{i}.png', [min(i, 1)]] for i in range(4)], 'factor_names': ['colour'],
                   'factor_sizes': [2]}, file)
    dataset = ImageFolderDataset(folder)
    query = np.ones([40, 1], dtype=np.int64)
    first_only = dataset.sample_from_factors(query)
    assert (first_only == arrays[1].transpose(2, 0, 1)).all()
    picked = dataset.sample_from_factors(query, np.random.RandomState(0))
    picked_ids = {next(i for i in (1, 2, 3) if (image == arrays[i].transpose(2, 0, 1)).all()) for image in picked}
    assert picked_ids == {1, 2, 3}


def test_lookup_of_a_missing_combination_names_it(dsprites_zip, tmp_path):
    dataset = ImageFolderDataset(strip_procedural(dsprites_zip, str(tmp_path / 'lookup')))
    stored = {tuple(dataset.get_factors(i)) for i in range(len(dataset))}
    missing = next(f for f in get_builtin('dsprites').index_to_factors(np.arange(1000)) if tuple(f) not in stored)
    with pytest.raises(DatasetError, match=r'no image with factors \(shape=0, scale=0, orientation=0'):
        dataset.sample_from_factors(np.stack([dataset.get_factors(0), missing]))


def test_out_of_range_factors_are_rejected_with_the_sizes():
    with pytest.raises(DatasetError, match='out of range'):
        BuiltinDataset('dsprites').sample_from_factors(np.array([[3, 0, 0, 0, 0]]))


def test_dataset_without_factors_says_so(labelled_folder):
    dataset = ImageFolderDataset(labelled_folder[0])
    assert not dataset.has_factors and dataset.get_details(0).factors is None
    with pytest.raises(DatasetError, match='no ground-truth factors'):
        dataset.sample_factors(4, 0)


# ----------------------------------------------------------------------------
# Construction from --data values and user errors.


def test_dataset_kwargs_maps_builtin_names_and_paths(dsprites_zip, labelled_folder):
    kwargs = dataset_kwargs('dsprites', use_labels=False, xflip=True)
    assert kwargs == {'class_name': 'training.dataset.BuiltinDataset', 'path': 'dsprites', 'use_labels': False,
                      'xflip': True}
    assert kwargs.path == 'dsprites'
    assert dataset_kwargs(dsprites_zip).class_name == 'training.dataset.ImageFolderDataset'
    assert dataset_kwargs(labelled_folder[0]).class_name == 'training.dataset.ImageFolderDataset'
    dataset = open_dataset(dsprites_zip, max_size=10)
    assert isinstance(dataset, ImageFolderDataset) and len(dataset) == 10


def test_dataset_kwargs_rejects_a_missing_path_or_a_plain_file(tmp_path):
    with pytest.raises(DatasetError, match='does not exist'):
        dataset_kwargs(str(tmp_path / 'nope.zip'))
    plain = tmp_path / 'notes.txt'
    plain.write_text('hello')
    with pytest.raises(DatasetError, match='neither a folder nor a .zip'):
        dataset_kwargs(str(plain))


def test_mixed_sizes_in_a_folder_point_to_dataset_tool(tmp_path):
    folder = write_images(str(tmp_path / 'mixed'), random_arrays(2, size=8) + random_arrays(1, size=16))
    with pytest.raises(DatasetError, match='dataset_tool.py --resolution'):
        ImageFolderDataset(folder)


def test_a_different_resolution_request_is_rejected(labelled_folder):
    with pytest.raises(DatasetError, match='not 16x16'):
        ImageFolderDataset(labelled_folder[0], resolution=16)
    with pytest.raises(DatasetError, match='--resolution=128'):
        BuiltinDataset('dsprites', resolution=128)


def test_a_corrupt_zip_or_image_raises_dataset_error(tmp_path, labelled_folder):
    bad_zip = tmp_path / 'bad.zip'
    bad_zip.write_bytes(b'PK\x03\x04 definitely not a zip archive')
    with pytest.raises(DatasetError, match='not a readable zip'):
        ImageFolderDataset(str(bad_zip))
    folder = str(tmp_path / 'truncated')
    shutil.copytree(labelled_folder[0], folder)
    path = os.path.join(folder, 'a4.png')
    with open(path, 'rb') as file:
        data = file.read()
    with open(path, 'wb') as file:
        file.write(data[:len(data) // 2])  # Header intact, pixels cut off.
    dataset = ImageFolderDataset(folder)
    with pytest.raises(DatasetError, match="Cannot read image 'a4.png'"):
        dataset[4]


# ----------------------------------------------------------------------------
# Worker safety.


def test_pickled_zip_dataset_reads_the_same_items(dsprites_zip):
    dataset = ImageFolderDataset(dsprites_zip, use_labels=True)
    first = dataset[0][0]  # Opens the zip in this process.
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._zipfile is None
    np.testing.assert_array_equal(clone[0][0], first)
    np.testing.assert_array_equal(clone.get_factors(9), dataset.get_factors(9))


def test_dataloader_workers_read_a_zip_correctly(dsprites_zip):
    dataset = ImageFolderDataset(dsprites_zip, max_size=64)
    dataset[0]  # An open handle in the parent must not be shared with forked workers.
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=2, shuffle=False)
    images = torch.cat([batch[0] for batch in loader]).numpy()
    np.testing.assert_array_equal(images, np.stack([dataset[i][0] for i in range(64)]))


def test_base_dataset_requires_subclass_hooks():
    dataset = Dataset(name='bare', raw_shape=[3, 1, 4, 4])
    assert len(dataset) == 3 and dataset.resolution == 4
    with pytest.raises(NotImplementedError):
        dataset[0]
