"""Factor oracle: learns factors, reports held-out accuracy, caches by key, pickles, rejects bad input."""

import pickle

import numpy as np
import pytest
import torch

from metrics import oracle as oracle_module
from metrics.ground_truth import MetricError
from metrics.oracle import FactorOracle, load_oracle


class BlockSource:
    """A 16x16 ImageSource-like dataset: a 4x4 block at (row, column) with one of 3 intensities."""

    name = 'blocks'
    resolution = 16
    num_channels = 1
    has_factors = True
    factor_names = ('row', 'column', 'intensity')
    factor_sizes = (4, 4, 3)

    @property
    def num_images(self):
        return int(np.prod(self.factor_sizes))

    def index_to_factors(self, indices):
        return np.stack(np.unravel_index(np.asarray(indices), self.factor_sizes), axis=1).astype(np.int64)

    def images(self, indices):
        factors = self.index_to_factors(indices)
        out = np.zeros([len(factors), 1, 16, 16], dtype=np.uint8)
        for i, (row, column, intensity) in enumerate(factors):
            out[i, 0, 4 * row:4 * row + 4, 4 * column:4 * column + 4] = 85 * (intensity + 1)
        return out


TINY = dict(num_train=40, num_heldout=8, num_steps=150, batch_size=16, lr=3e-3)


def test_oracle_learns_block_factors_and_reports_heldout_accuracy(tmp_path):
    oracle = load_oracle(BlockSource(), cache_dir=str(tmp_path), verbose=False, **TINY)
    assert oracle.factor_names == BlockSource.factor_names
    assert oracle.factor_sizes == (4, 4, 3)
    assert (oracle.img_resolution, oracle.img_channels) == (16, 1)
    assert set(oracle.accuracy) == set(BlockSource.factor_names)
    source = BlockSource()
    everything = np.arange(source.num_images)
    predicted = oracle.predict(source.images(everything))
    assert predicted.dtype == torch.int64 and predicted.shape == (48, 3)
    # The held-out images are 8 of the 48, so the accuracy over all of them bounds it from both sides.
    overall = (predicted.numpy() == source.index_to_factors(everything)).mean(axis=0)
    assert overall.min() > 0.8
    for k, name in enumerate(BlockSource.factor_names):
        assert oracle.accuracy[name] >= 1.0 - (1.0 - overall[k]) * 48 / 8 - 1e-9
        assert oracle.accuracy_near[name] >= oracle.accuracy[name]


def test_oracle_accepts_uint8_and_float_images_alike(tmp_path):
    oracle = load_oracle(BlockSource(), cache_dir=str(tmp_path), verbose=False, **dict(TINY, num_steps=5))
    images = BlockSource().images(np.arange(48))
    as_float = torch.from_numpy(images).float() / 127.5 - 1
    assert torch.equal(oracle.predict(images), oracle.predict(as_float))
    features = oracle.features(as_float)
    assert features.shape == (48, 256) and features.dtype == torch.float32
    assert torch.allclose(features, oracle.features(images))
    # Images at twice the resolution are area-downsampled to the oracle's.
    bigger = as_float.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(oracle.features(bigger), features, atol=1e-5)


def test_oracle_is_cached_by_settings_and_reloaded_without_training(tmp_path, monkeypatch):
    first = load_oracle(BlockSource(), cache_dir=str(tmp_path), verbose=False, **dict(TINY, num_steps=5))
    assert len(list(tmp_path.glob('oracle-blocks-16-*.pkl'))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError('the cached oracle should have been loaded')

    monkeypatch.setattr(oracle_module, 'train_oracle', refuse)
    again = load_oracle(BlockSource(), cache_dir=str(tmp_path), verbose=False, **dict(TINY, num_steps=5))
    assert again.accuracy == first.accuracy
    images = BlockSource().images(np.arange(48))
    assert torch.equal(again.features(images), first.features(images))
    with pytest.raises(AssertionError, match='cached oracle'):
        load_oracle(BlockSource(), cache_dir=str(tmp_path), verbose=False, **dict(TINY, num_steps=6))


def test_oracle_training_is_deterministic_and_pickles(tmp_path):
    a = load_oracle(BlockSource(), cache_dir=False, verbose=False, **dict(TINY, num_steps=5))
    b = load_oracle(BlockSource(), cache_dir=False, verbose=False, **dict(TINY, num_steps=5))
    images = BlockSource().images(np.arange(48))
    assert torch.equal(a.features(images), b.features(images))
    restored = pickle.loads(pickle.dumps(a))
    assert isinstance(restored, torch.nn.Module) and type(restored).__name__ == 'FactorOracle'
    assert torch.equal(restored.features(images), a.features(images))
    assert restored.accuracy == a.accuracy and restored.factor_sizes == a.factor_sizes


def test_oracle_on_builtin_dsprites_has_one_head_per_factor(tmp_path):
    oracle = load_oracle('dsprites', cache_dir=str(tmp_path), verbose=False, num_train=256, num_heldout=64,
                         num_steps=2, batch_size=8)
    assert oracle.factor_names == ('shape', 'scale', 'orientation', 'pos_x', 'pos_y')
    assert oracle.factor_sizes == (3, 6, 40, 32, 32)
    logits = oracle(torch.zeros([2, 1, 64, 64]))
    assert [tuple(l.shape) for l in logits] == [(2, 3), (2, 6), (2, 40), (2, 32), (2, 32)]
    assert oracle.train_info['num_heldout'] == 64


def test_oracle_rejects_datasets_without_factors_and_unknown_options(tmp_path):
    with pytest.raises(MetricError, match='no ground-truth factors'):
        load_oracle('digits', cache_dir=str(tmp_path), verbose=False)
    with pytest.raises(MetricError, match='Unknown oracle training option'):
        load_oracle(BlockSource(), cache_dir=str(tmp_path), verbose=False, epochs=3)
    with pytest.raises(MetricError, match='power-of-two'):
        FactorOracle(('a',), (2,), img_resolution=24)
    oracle = FactorOracle(('a',), (2,), img_resolution=16, img_channels=1)
    with pytest.raises(MetricError, match='expects 1-channel images but the data has 2'):
        oracle.predict(torch.zeros([1, 2, 16, 16]))
