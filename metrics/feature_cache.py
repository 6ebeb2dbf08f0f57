"""Real-data features for the fidelity metrics, computed once and cached on disk.

The cache file `<dnnlib cache>/gan-metrics/<dataset>-<detector>-<key>.npz` (written atomically)
holds either the mean and covariance of the features (`capture='mean_cov'`, for FD; accumulated in
float64 so that a full dataset never sits in memory) or all feature vectors (`'features'`, for
KID and precision/recall). `<key>` hashes the dataset's name, size, resolution and channels, the
detector's id (its URL, or the oracle's own cache key), the number of images, the seed and the
capture mode. The images are a seeded random subset (all of them when `num` equals the dataset's
size), not the first `num`: built-in datasets enumerate their factor grid in order.
"""

import hashlib
import json
import os

import numpy as np
import torch

import dnnlib
from dnnlib.progress import Progress
from torch_utils import misc


def cache_path(dataset, detector, num, capture, seed):
    identity = dict(dataset=str(dataset.name), num_images=len(dataset), resolution=int(dataset.resolution),
                    channels=int(dataset.num_channels), detector=detector.id, num=int(num), capture=capture,
                    seed=int(seed))
    key = hashlib.md5(json.dumps(identity, sort_keys=True).encode('utf-8')).hexdigest()
    safe = ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in f'{dataset.name}-{detector.name}')
    return dnnlib.util.make_cache_dir_path('gan-metrics', f'{safe}-{key}.npz')


def real_features(dataset, detector, num, capture='features', seed=0, batch_size=64, cache=True, progress=True,
                  desc='real'):
    """dict(mu, sigma) or dict(features) of `num` dataset images, from the cache when present."""
    path = cache_path(dataset, detector, num, capture, seed) if cache else None
    if path is not None and os.path.isfile(path):
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    rnd = np.random.RandomState(seed)
    indices = np.arange(len(dataset)) if num >= len(dataset) else np.sort(rnd.choice(len(dataset), num, replace=False))
    count, total, outer, chunks = 0, None, None, []
    with Progress(len(indices), desc=desc, unit='img', enabled=progress, interval=10.0) as bar:
        for start in range(0, len(indices), batch_size):
            batch = list(indices[start:start + batch_size])
            images = np.stack([image for image, _label in dataset.__getitems__(batch)])
            features = detector(torch.from_numpy(images)).double().cpu().numpy()
            if capture == 'mean_cov':
                total = features.sum(axis=0) if total is None else total + features.sum(axis=0)
                outer = features.T @ features if outer is None else outer + features.T @ features
            else:
                chunks.append(features.astype(np.float32))
            count += len(features)
            bar.update(len(features))
    if capture == 'mean_cov':
        mu = total / count
        sigma = (outer - count * np.outer(mu, mu)) / max(count - 1, 1)   # unbiased, as np.cov
        result = dict(mu=mu, sigma=sigma)
    else:
        result = dict(features=np.concatenate(chunks))
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with misc.atomic_open(path, 'wb') as f:
            np.savez(f, **result)
    return result
