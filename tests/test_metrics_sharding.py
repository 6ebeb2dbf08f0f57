"""Metrics split across the ranks of a multi-process run: 2 gloo processes give every rank the union of the shares."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from metrics import detectors, feature_cache, fidelity, metric_main
from metrics.generative import generative_model
from metrics.generator_side import generated_codes_and_factors
from metrics.ground_truth import MetricError
from metrics.sharding import RANK_SEED_STRIDE, Shard
from tests.test_metrics_fidelity import MeanPoolFeatures

NUM = 21  # odd: rank 0 renders 11, rank 1 renders 10


class BrightnessOracle:
    """A stand-in factor oracle: one binary factor, whether the image is brighter than mid-grey."""

    img_channels, img_resolution = 1, 32

    def predict(self, images):
        return (images.mean(dim=(1, 2, 3)) > 0).long()[:, None]


def tiny_snapshot(path):
    from networks.stylegan2 import Generator
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=64, channel_max=4))
    with open(path, 'wb') as f:
        pickle.dump(dict(G_ema=G), f)


def _rank_main(rank, init_file, pkl, detector, out_dir):
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        result = metric_main.calc_metric('fid50k_full', network_pkl=pkl, data='digits', num_gpus=2, rank=rank,
                                         device='cpu', progress=False, cache=False, detector_url=detector,
                                         num_real=40, num_gen=NUM)
        with open(pkl, 'rb') as f:
            model = generative_model(pickle.load(f))
        codes, factors = generated_codes_and_factors(model, BrightnessOracle(), NUM, seed=0, batch_size=4,
                                                     shard=Shard(rank, 2, 'cpu'))
        np.savez(os.path.join(out_dir, f'rank{rank}.npz'), codes=codes, factors=factors)
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(result.results, f)
    finally:
        torch.distributed.destroy_process_group()


def test_shares_cover_the_samples_and_seeds_differ():
    shards = [Shard(rank, 3) for rank in range(3)]
    assert [shard.share(10) for shard in shards] == [4, 3, 3]
    assert [shard.seed(5) for shard in shards] == [5, 5 + RANK_SEED_STRIDE, 5 + 2 * RANK_SEED_STRIDE]
    with pytest.raises(MetricError, match='2 samples cannot be split across 3 processes'):
        shards[0].share(2)
    with pytest.raises(ValueError):
        Shard(rank=2, num_gpus=2)


def test_two_gloo_ranks_score_the_union_of_their_shares(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    pkl, detector = str(tmp_path / 'G.pkl'), str(tmp_path / 'meanpool.pt')
    tiny_snapshot(pkl)
    torch.jit.script(MeanPoolFeatures()).save(detector)
    torch.multiprocessing.start_processes(_rank_main, args=(str(tmp_path / 'init'), pkl, detector, str(tmp_path)),
                                          nprocs=2, join=True, start_method='spawn')
    results = [json.load(open(tmp_path / f'rank{rank}.json')) for rank in range(2)]
    arrays = [np.load(tmp_path / f'rank{rank}.npz') for rank in range(2)]
    assert results[0] == results[1]                                   # every rank reports the same score
    assert np.array_equal(arrays[0]['codes'], arrays[1]['codes']) and len(arrays[0]['codes']) == NUM

    # The reference, in one process: rank 0's 11 samples from seed 0, then rank 1's 10 from its seed.
    with open(pkl, 'rb') as f:
        model = generative_model(pickle.load(f))
    parts = [list(model.iterate(11, seed=0, batch_size=4)), list(model.iterate(10, seed=RANK_SEED_STRIDE, batch_size=4))]
    codes = torch.cat([c for part in parts for c, _ in part]).double().numpy()
    assert np.array_equal(arrays[0]['codes'], codes)
    images = torch.cat([x for part in parts for _, x in part])
    assert np.array_equal(arrays[0]['factors'], BrightnessOracle().predict(images).numpy())

    monkeypatch.setattr(detectors, '_detector_cache', {})
    det = detectors.get_torchscript_detector(detector, verbose=False)
    features = np.concatenate([fidelity.generated_features(model, det, n, seed, 64, _Counter())
                               for n, seed in ((11, 0), (10, RANK_SEED_STRIDE))])
    dataset = metric_main.MetricOptions(snapshot_data={}, data='digits').open_dataset()
    real = feature_cache.real_features(dataset, det, 40, capture='mean_cov', seed=0, batch_size=64, cache=False,
                                       progress=False)
    expected = fidelity.frechet_distance(*fidelity.mean_cov(features), real['mu'], real['sigma'])
    assert results[0]['fid50k_full'] == pytest.approx(expected, rel=1e-9)
    one_process = metric_main.calc_metric('fid50k_full', network_pkl=pkl, data='digits', progress=False, cache=False,
                                          detector_url=detector, num_real=40, num_gen=NUM).results.fid50k_full
    assert one_process != pytest.approx(expected, rel=1e-9)          # a different sample, as documented


class _Counter:
    def update(self, n):
        pass
