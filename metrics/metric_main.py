"""Metric registry, evaluation of a snapshot and reporting to `metric-<name>.jsonl`, as in StyleGAN2-ADA.

    from metrics import metric_main
    result = metric_main.calc_metric('mig', network_pkl='vae-snapshot-000100.pkl', data='dsprites')
    metric_main.report_metric(result, run_dir='runs/00000-...', snapshot_pkl='vae-snapshot-000100.pkl')

Every metric is a function of `MetricOptions` returning a flat dict of floats; its result keys are
prefixed with the metric's name so that the results of several metrics can share one dict (the
training loop merges them into its TensorBoard scalars). Disentanglement metrics use the
disentanglement_lib defaults and seed 0, and need a dataset with ground-truth factors and a
snapshot with an encoder (`E`) or `Q` head. Generator-side metrics (`mig_gen`, `dci_gen`) and
fidelity metrics (`fid50k_full`, `kid50k_full`, `pr50k3_full`, `fd_oracle`, `kid_oracle`,
`pr_oracle`) need a generator (`G_ema`/`G`) or a VAE decoder (`Dec`); see docs/METRICS.md.

Multi-GPU (`train.py --gpus=N`, torchrun): the generator-side and fidelity metrics split their
generated samples across the ranks (metrics/sharding.py: rank r renders its share from its own seed,
the ranks exchange the features, every rank returns the same results); the encoder-side metrics,
cheap next to training and fully determined by the seed, run on rank 0 while the other ranks
return empty results.
"""

import copy
import inspect
import json
import os
import tempfile
import time

import numpy as np
import torch

import dnnlib
from dnnlib.progress import Progress, format_time
from metrics import beta_vae, factor_vae, fidelity, generator_side, modularity_explicitness, unsupervised
from metrics import dci as dci_metric
from metrics import mig as mig_metric
from metrics import sap as sap_metric
from metrics.generative import generative_model
from metrics.ground_truth import MetricError, as_ground_truth
from metrics.representation import representation_from_snapshot
from metrics.sharding import Shard

# ----------------------------------------------------------------------------


class MetricOptions:
    """What a metric needs: the snapshot (path or loaded dict), the dataset and where to run."""

    def __init__(self, network_pkl=None, snapshot_data=None, dataset_kwargs=None, data=None, run_dir=None,
                 num_gpus=1, rank=0, device=None, seed=0, progress=True, cache=True, **metric_kwargs):
        if network_pkl is None and snapshot_data is None:
            raise MetricError('A metric needs a network: pass network_pkl (--network) or snapshot_data.')
        self.network_pkl = network_pkl
        self._snapshot = snapshot_data
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs) if dataset_kwargs is not None else None
        self.data = data
        self.run_dir = run_dir
        self.num_gpus = int(num_gpus)
        self.rank = int(rank)
        self.device = torch.device(device) if device is not None else torch.device('cpu')
        self.seed = int(seed)
        self.progress = bool(progress) and self.rank == 0   # one set of progress lines
        self.cache = bool(cache)
        self.metric_kwargs = metric_kwargs   # overrides of a metric's sample sizes (tests, quick looks)
        self.shard = Shard(self.rank, self.num_gpus, self.device)   # the split of generated samples

    @property
    def snapshot(self):
        if self._snapshot is None:
            from training.snapshot import load_network_pkl
            self._snapshot = load_network_pkl(self.network_pkl)
        return self._snapshot

    def open_dataset(self):
        """The evaluation dataset: `data` (a --data value) if given, else the snapshot's training set."""
        from training import dataset as dataset_module
        if self.data is not None:
            return dataset_module.open_dataset(self.data)
        kwargs = self.dataset_kwargs
        if kwargs is None and isinstance(self.snapshot, dict):
            kwargs = self.snapshot.get('training_set_kwargs')
        if not kwargs:
            raise MetricError('No dataset to evaluate on: the snapshot records no training set; pass --data.')
        kwargs = dnnlib.EasyDict(copy.deepcopy(dict(kwargs)))
        for key in ('xflip', 'max_size', 'use_labels'):   # metrics see the data itself, not training's view
            kwargs.pop(key, None)
        return dnnlib.util.construct_class_by_name(**kwargs)


# ----------------------------------------------------------------------------
# Registry.

_metric_dict = dict()   # name -> fn(opts) -> dict of floats


def register_metric(fn):
    assert callable(fn)
    _metric_dict[fn.__name__] = fn
    return fn


def is_valid_metric(metric):
    return metric in _metric_dict


def list_valid_metrics():
    return list(_metric_dict.keys())


def calc_metric(metric, **kwargs):
    """Evaluate one metric; kwargs go to MetricOptions. Returns EasyDict(results, metric, total_time, ...)."""
    if not is_valid_metric(metric):
        raise MetricError(f'Unknown metric {metric!r}; choose from {", ".join(list_valid_metrics())}.')
    opts = MetricOptions(**kwargs)
    start = time.time()
    results = _metric_dict[metric](opts) if opts.rank == 0 or metric in SPLIT_ACROSS_RANKS else dict()
    total_time = time.time() - start
    return dnnlib.EasyDict(
        results=dnnlib.EasyDict({key: float(value) for key, value in results.items()}),
        metric=metric,
        total_time=total_time,
        total_time_str=format_time(total_time),
        num_gpus=opts.num_gpus,
    )


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print one JSON line and append it to `<run_dir>/metric-<metric>.jsonl` (rewritten atomically)."""
    metric = result_dict['metric']
    assert is_valid_metric(metric)
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        path = os.path.join(run_dir, f'metric-{metric}.jsonl')
        previous = b''
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                previous = f.read()
            if previous and not previous.endswith(b'\n'):
                previous += b'\n'
        fd, temp_path = tempfile.mkstemp(prefix=f'.metric-{metric}.', suffix='.tmp', dir=run_dir)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(previous + (line + '\n').encode('utf-8'))
            os.replace(temp_path, path)
        except BaseException:
            if os.path.exists(temp_path):
                os.remove(temp_path)
            raise


# ----------------------------------------------------------------------------
# Disentanglement metrics (disentanglement_lib definitions and defaults).


class _CountingRepresentation:
    """Wraps a representation function to drive a progress line with ETA over the observations it encodes."""

    def __init__(self, representation_function, progress):
        self.representation_function = representation_function
        self.progress = progress

    def __call__(self, observations):
        codes = self.representation_function(observations)
        self.progress.update(len(observations))
        return codes


def _defaults(fn, overrides):
    """The compute function's keyword defaults, updated with the overrides it accepts."""
    params = {name: p.default for name, p in inspect.signature(fn).parameters.items()
              if p.default is not inspect.Parameter.empty}
    params.update({key: value for key, value in overrides.items() if key in params})
    return params


def metric_option_names(metric):
    """Options (sample sizes etc.) that `calc_metric(metric, **options)` passes on to the metric."""
    fns = _COMPUTE_FNS.get(metric)
    fns = list(fns) if isinstance(fns, (list, tuple)) else [fns] if fns is not None else []
    names = set().union(*[fn if isinstance(fn, dict) else _defaults(fn, {}) for fn in fns])
    return sorted(names - {'seed', 'progress', 'device', 'dataset', 'shard'})


def parse_metric_names(text):
    """Metric names of a comma-separated option value; '' or 'none' give []; an unknown name is a MetricError."""
    if text is None or text.strip().lower() in ('', 'none'):
        return []
    names = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in names if not is_valid_metric(name)]
    if unknown:
        raise MetricError(f'unknown metric(s) {", ".join(unknown)}; choose from {", ".join(list_valid_metrics())}.')
    return names


def parse_metric_options(text, metric_names, flag='--options'):
    """The JSON object of metric options (sample sizes etc.), checked against what the chosen metrics accept."""
    if text is None or not text.strip():
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise MetricError(f'{flag} is not valid JSON ({err}); write e.g. {flag}=\'{{"num_train": 1000}}\'.')
    if not isinstance(options, dict):
        raise MetricError(f'{flag} must be a JSON object such as {{"num_train": 1000}}.')
    if options and not metric_names:
        raise MetricError(f'{flag} was given without any metric to apply it to; add --metrics.')
    known = {name for metric in metric_names for name in metric_option_names(metric)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MetricError(f'{flag} {", ".join(unknown)} apply to none of the chosen metrics; '
                          f'valid: {", ".join(sorted(known)) or "none"}.')
    return options


def _run_disentanglement(opts, metric, compute_fn, num_observations):
    """Shared path: dataset with factors + snapshot representation -> compute_fn's dict."""
    ground_truth = as_ground_truth(opts.open_dataset())
    representation = representation_from_snapshot(opts.snapshot, device=opts.device)
    kwargs = _defaults(compute_fn, opts.metric_kwargs)
    with Progress(num_observations(kwargs), desc=metric, unit='img', enabled=opts.progress, interval=10.0) as progress:
        return compute_fn(ground_truth, _CountingRepresentation(representation, progress),
                          np.random.RandomState(opts.seed), **kwargs)


_COMPUTE_FNS = dict(factorvae=factor_vae.compute_factor_vae, betavae=beta_vae.compute_beta_vae,
                    mig=mig_metric.compute_mig, dci=dci_metric.compute_dci, sap=sap_metric.compute_sap,
                    modularity=modularity_explicitness.compute_modularity_explicitness,
                    gaussian_tc=unsupervised.compute_unsupervised)


@register_metric
def factorvae(opts):
    r = _run_disentanglement(opts, 'factorvae', factor_vae.compute_factor_vae,
                             lambda k: k['num_variance_estimate'] + (k['num_train'] + k['num_eval']) * k['batch_size'])
    return dict(factorvae=r['eval_accuracy'], factorvae_train=r['train_accuracy'],
                factorvae_num_active_dims=r['num_active_dims'])


@register_metric
def betavae(opts):
    r = _run_disentanglement(opts, 'betavae', beta_vae.compute_beta_vae,
                             lambda k: (k['num_train'] + k['num_eval']) * 2 * k['batch_size'])
    return dict(betavae=r['eval_accuracy'], betavae_train=r['train_accuracy'])


@register_metric
def mig(opts):
    r = _run_disentanglement(opts, 'mig', mig_metric.compute_mig, lambda k: k['num_train'])
    return dict(mig=r['discrete_mig'])


@register_metric
def dci(opts):
    r = _run_disentanglement(opts, 'dci', dci_metric.compute_dci,
                             lambda k: k['num_train'] + k['num_test'])
    return dict(dci_disentanglement=r['disentanglement'], dci_completeness=r['completeness'],
                dci_informativeness_test=r['informativeness_test'],
                dci_informativeness_train=r['informativeness_train'])


@register_metric
def sap(opts):
    r = _run_disentanglement(opts, 'sap', sap_metric.compute_sap,
                             lambda k: k['num_train'] + k['num_test'])
    return dict(sap=r['SAP_score'])


@register_metric
def modularity(opts):
    r = _run_disentanglement(opts, 'modularity', modularity_explicitness.compute_modularity_explicitness,
                             lambda k: k['num_train'] + k['num_test'])
    return dict(modularity=r['modularity_score'], explicitness_test=r['explicitness_score_test'],
                explicitness_train=r['explicitness_score_train'])


@register_metric
def gaussian_tc(opts):
    r = _run_disentanglement(opts, 'gaussian_tc', unsupervised.compute_unsupervised, lambda k: k['num_train'])
    return dict(gaussian_tc=r['gaussian_total_correlation'],
                gaussian_wasserstein_corr=r['gaussian_wasserstein_correlation'],
                gaussian_wasserstein_corr_norm=r['gaussian_wasserstein_correlation_norm'],
                mutual_info_score=r['mutual_info_score'])


# ----------------------------------------------------------------------------
# Generator-side disentanglement (metrics/generator_side.py): codes -> images -> factor oracle.


def _oracle_options(oracle_kwargs=None):
    """`oracle_kwargs`: training settings of the factor oracle (metrics/oracle.py), part of its cache key."""


def _run_generator_side(opts, metric, compute_fn, num_images):
    model_kwargs = _defaults(generative_model, opts.metric_kwargs)
    model_kwargs.pop('device', None)
    model_kwargs.pop('dataset', None)
    kwargs = _defaults(compute_fn, opts.metric_kwargs)
    for key in ('seed', 'progress', 'shard'):
        kwargs.pop(key, None)
    return generator_side.run(opts, metric, compute_fn, model_kwargs, kwargs, num_images(kwargs))


_COMPUTE_FNS.update(mig_gen=(generator_side.compute_mig_gen, generative_model, _oracle_options),
                    dci_gen=(generator_side.compute_dci_gen, generative_model, _oracle_options))


@register_metric
def mig_gen(opts):
    return _run_generator_side(opts, 'mig_gen', generator_side.compute_mig_gen, lambda k: k['num_train'])


@register_metric
def dci_gen(opts):
    return _run_generator_side(opts, 'dci_gen', generator_side.compute_dci_gen,
                               lambda k: k['num_train'] + k['num_test'])


# ----------------------------------------------------------------------------
# Fidelity (metrics/fidelity.py): FD, KID, precision/recall with the Inception/VGG16 detectors or the oracle.


def _fidelity_metric(metric):
    def evaluate(opts):
        options = {key: opts.metric_kwargs.get(key, value) for key, value in fidelity.METRIC_SPECS[metric].options.items()}
        model_kwargs = {key: value for key, value in _defaults(generative_model, opts.metric_kwargs).items()
                        if key not in ('device', 'dataset', 'num_z_codes')}
        return fidelity.run_metric(opts, metric, options, model_kwargs)
    evaluate.__name__ = metric
    return evaluate


for _metric, _spec in fidelity.METRIC_SPECS.items():
    register_metric(_fidelity_metric(_metric))
    _COMPUTE_FNS[_metric] = (_spec.options, {k: v for k, v in _defaults(generative_model, {}).items() if k != 'num_z_codes'}) \
        + ((_oracle_options,) if _spec.detector == 'oracle' else ())

# Metrics whose generated samples are split across the ranks of a multi-process run (metrics/sharding.py).
SPLIT_ACROSS_RANKS = frozenset(['mig_gen', 'dci_gen', *fidelity.METRIC_SPECS])
