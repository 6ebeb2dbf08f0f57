"""Generator-side disentanglement: does moving code i move one factor of the generated image?

    codes, factors = generated_codes_and_factors(model, oracle, num=10000, seed=0)
    compute_mig_gen(model, oracle)     # {'mig_gen': ..., 'mig_gen_<factor>': ...}
    compute_dci_gen(model, oracle)     # {'dci_gen_disentanglement': ..., ...}

A generative model (metrics/generative.py) samples codes from its own code distribution and
renders them; the dataset's factor oracle (metrics/oracle.py) labels every image with its
predicted factor indices; MIG and DCI are then computed between the codes and those labels with
the same cores as the encoder-side metrics (`mig_from_codes`, `dci_from_codes`: 20 histogram
bins; one gradient-boosted-trees classifier per factor). The direction is reversed compared with
the encoder-side metrics — codes are the cause, factors the effect — but both metrics only
measure how information is shared between the two sets of variables, so their definitions carry
over unchanged. The scores inherit the oracle's errors: a factor the oracle recognises at 60 %
cannot look perfectly controlled, so read them next to `oracle.accuracy`.

Defaults are the encoder-side ones: 10 000 samples for MIG; 10 000 train / 5 000 test for DCI.
"""

import numpy as np

from dnnlib.progress import Progress
from metrics.dci import dci_from_codes
from metrics.ground_truth import MetricError, check_sizes
from metrics.mig import mig_from_codes
from metrics.sharding import SINGLE_PROCESS


def generated_codes_and_factors(model, oracle, num, seed=0, batch_size=256, progress=None, shard=SINGLE_PROCESS):
    """(codes float64 [num, code_dim], oracle factors int64 [num, F]) of `num` seeded samples (split across `shard`'s ranks)."""
    if (model.img_channels, model.img_resolution) != (oracle.img_channels, oracle.img_resolution) \
            and model.img_channels not in (1, 3):
        raise MetricError(f'The model renders {model.img_channels}-channel images, which the oracle of '
                          f'{oracle.img_channels}-channel data cannot label.')
    codes, factors = [], []
    for batch_codes, images in shard.iterate(model, num, seed=seed, batch_size=batch_size):
        codes.append(batch_codes.double().numpy().reshape(len(batch_codes), -1))
        factors.append(oracle.predict(images).cpu().numpy())
        if progress is not None:
            progress.update(len(batch_codes))
    return shard.gather(np.concatenate(codes)), shard.gather(np.concatenate(factors).astype(np.int64))


def compute_mig_gen(model, oracle, seed=0, num_train=10000, num_bins=20, batch_size=256, progress=None,
                    shard=SINGLE_PROCESS):
    """MIG between the model's codes and the oracle's factors, overall and per factor."""
    check_sizes(num_train=num_train)
    codes, factors = generated_codes_and_factors(model, oracle, num_train, seed, batch_size, progress, shard)
    if codes.shape[1] < 2:
        raise MetricError(f'mig_gen needs a model with at least 2 code dimensions, got {codes.shape[1]}.')
    score, info, entropy = mig_from_codes(codes, factors, num_bins)
    top_two = -np.sort(-info, axis=0)[:2]
    gaps = np.divide(top_two[0] - top_two[1], entropy, out=np.zeros_like(entropy), where=entropy > 0)
    results = dict(mig_gen=score)
    results.update({f'mig_gen_{name}': float(gap) for name, gap in zip(oracle.factor_names, gaps)})
    return results


def compute_dci_gen(model, oracle, seed=0, num_train=10000, num_test=5000, batch_size=256, trees='vectorised',
                    num_workers=None, progress=None, shard=SINGLE_PROCESS):
    """DCI between the model's codes and the oracle's factors (train and test sets are disjoint samples)."""
    check_sizes(num_train=num_train, num_test=num_test)
    codes, factors = generated_codes_and_factors(model, oracle, num_train + num_test, seed, batch_size, progress,
                                                 shard)
    # A factor that the generator never varies gives the trees a single class: its importance row is zero.
    scores = dci_from_codes(codes[:num_train], factors[:num_train], codes[num_train:], factors[num_train:],
                            num_workers=num_workers, trees=trees)
    return {f'dci_gen_{key}': value for key, value in scores.items()}


# ----------------------------------------------------------------------------
# Entry points of the metric registry (metrics/metric_main.py).


def model_and_oracle(opts, model_kwargs):
    """(GenerativeModel of the snapshot, factor oracle of the evaluation dataset) for MetricOptions."""
    from metrics.generative import generative_model
    from metrics.oracle import load_oracle
    dataset = opts.open_dataset()
    if not getattr(dataset, 'has_factors', False):
        raise MetricError(f'Dataset {dataset.name!r} has no ground-truth factors, which the factor oracle needs; '
                          f'use --data=dsprites or shapes3d, or a dataset.json with "factors".')
    oracle_kwargs = dict(opts.metric_kwargs.get('oracle_kwargs') or {})
    oracle = load_oracle(dataset, device=opts.device, verbose=opts.progress, **oracle_kwargs)
    model = generative_model(opts.snapshot, device=opts.device, dataset=dataset, **model_kwargs)
    return model, oracle


def run(opts, metric, compute_fn, model_kwargs, kwargs, num_images):
    model, oracle = model_and_oracle(opts, model_kwargs)
    if opts.progress:
        print(f'{metric}: {model.describe()}')
    with Progress(opts.shard.share(num_images), desc=metric, unit='img', enabled=opts.progress, interval=10.0) as progress:
        return compute_fn(model, oracle, seed=opts.seed, progress=progress, shard=opts.shard, **kwargs)
