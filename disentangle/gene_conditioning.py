"""Conditional sampling from an unconditional genes network, with an attribute classifier (docs/STYLEGENES.md).

    generate.py --network=genes.pkl --condition shape=heart --seeds=0-63 --outdir=out

1. Draw `num_samples` genomes uniformly, render them and classify every image (the dataset's factor
   oracle from metrics/oracle.py, or any TorchScript / pickled classifier).
2. Count, for every gene g, variant k and attribute value v, how often they occur together:
   counts[g, k, v]. Naive Bayes reads these as the class-conditional variant distributions
       P(k | v, gene g) = (counts[g, k, v] + alpha) / (sum_k counts[g, k, v] + K * alpha),
   with Laplace smoothing alpha = 1 (a variant never seen with v keeps a little mass).
   A condition may name a set of values (a range, e.g. pos_x=0-15): its counts are summed.
3. To realise v, draw each gene's variant independently from P(k | v, g) -- the naive-Bayes model
   of P(genome | v). Several conditions multiply their per-gene distributions (conditional
   independence of the attributes given the variant, and a uniform prior over variants).
   `temperature` < 1 sharpens every distribution (p^(1 / T), renormalised): fewer distinct genomes,
   a higher hit rate.
With ID-GAN codes (genes + idgan) only the genome is conditioned; the code is drawn as usual.

Success is measured on the rendered seeds with the same classifier (images never used to fit the
counts) and compared with the base rate: the fraction of the uniformly drawn samples of step 1
that already meet every condition.
"""

import json
import os
import pickle

import numpy as np
import torch

from dnnlib.progress import Progress

DEFAULT_SAMPLES = 2000
DEFAULT_ALPHA = 1.0


class ConditionError(ValueError):
    """A condition or classifier that does not fit (one sentence naming the fix)."""


# ----------------------------------------------------------------------------------------------
# Classifiers: anything with predict(images [-1, 1] NCHW) -> int64 [N, F], factor_names, factor_sizes.

class ModuleClassifier:
    """Adapts a torch module (TorchScript or pickled) to the classifier interface.

    The module maps images in [-1, 1] to logits [N, V] (one attribute, argmax is the value), to a
    list/tuple of logits (one per attribute), or directly to integer values [N, F]. Attribute names
    and sizes come from the module's `factor_names` / `factor_sizes` when it has them.
    """

    def __init__(self, module, factor_names=None, factor_sizes=None, value_names=None, device='cpu'):
        self.module = module.eval().to(device) if hasattr(module, 'eval') else module
        self.factor_names = tuple(factor_names or getattr(module, 'factor_names', None) or ())
        self.factor_sizes = tuple(factor_sizes or getattr(module, 'factor_sizes', None) or ())
        self.value_names = dict(value_names or getattr(module, 'value_names', None) or {})
        if not self.factor_names or len(self.factor_names) != len(self.factor_sizes):
            raise ConditionError('the classifier does not say what it predicts: give the module factor_names and '
                                 'factor_sizes attributes (e.g. ("shape",) and (3,)).')

    @torch.no_grad()
    def predict(self, images):
        out = self.module(images)
        if isinstance(out, (list, tuple)):
            return torch.stack([o.argmax(dim=1) for o in out], dim=1).long()
        if out.is_floating_point():
            return out.argmax(dim=1, keepdim=True).long()
        return out.long().reshape(out.shape[0], -1)


def load_classifier(spec, dataset=None, device='cpu'):
    """'oracle' (the factor oracle of `dataset`), or a TorchScript / pickled classifier file."""
    if spec == 'oracle':
        if not dataset:
            raise ConditionError('--classifier=oracle needs to know the dataset, but the snapshot names none; '
                                 'pass --classifier=PATH.')
        try:
            from metrics.oracle import load_oracle
        except ImportError:
            raise ConditionError('the factor oracle (metrics/oracle.py) is not installed here; pass '
                                 '--classifier=PATH (a TorchScript or pickled classifier).')
        return load_oracle(dataset, device=device)
    if not os.path.isfile(spec):
        raise ConditionError(f'--classifier={spec} does not exist; pass "oracle" or a classifier file.')
    try:
        module = torch.jit.load(spec, map_location=device)
    except (RuntimeError, ValueError):
        try:
            with open(spec, 'rb') as f:
                module = pickle.load(f)
        except Exception as err:
            raise ConditionError(f'--classifier={spec} is neither TorchScript nor a pickle ({type(err).__name__}).')
    if hasattr(module, 'predict') and hasattr(module, 'factor_names'):
        return module
    if not callable(module):
        raise ConditionError(f'--classifier={spec} holds a {type(module).__name__}, not a classifier.')
    return ModuleClassifier(module, device=device)


def dataset_of(snapshot):
    """The built-in dataset name (or data path) a snapshot was trained on, or None."""
    return (snapshot.get('training_set_kwargs') or {}).get('path')


def value_names_of(classifier, dataset=None):
    """factor name -> list of value names (the classifier's, else the built-in dataset's shape names)."""
    names = dict(getattr(classifier, 'value_names', None) or {})
    if dataset and 'shape' in classifier.factor_names and 'shape' not in names:
        from training import procedural
        if procedural.is_builtin(dataset):
            shape_names = getattr(procedural.get_builtin(dataset), 'shape_names', None)
            if shape_names:
                names['shape'] = list(shape_names)
    return names


def parse_conditions(items, classifier, dataset=None):
    """['shape=heart', 'scale=2', 'pos_x=0-15'] -> {factor index: value index, or a list of them for a range}."""
    factors = list(classifier.factor_names)
    value_names = value_names_of(classifier, dataset)
    out = {}
    for item in items:
        for part in str(item).split(','):
            key, sep, value = part.partition('=')
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise ConditionError(f'--condition {part!r} is not FACTOR=VALUE (e.g. --condition shape=heart).')
            if key not in factors:
                raise ConditionError(f'--condition {part!r}: the classifier knows no factor "{key}"; choose one of '
                                     f'{", ".join(factors)}.')
            f = factors.index(key)
            names = [str(n) for n in value_names.get(key, [])]
            size = int(classifier.factor_sizes[f])
            lo, dash, hi = value.partition('-')
            if value in names:
                v = names.index(value)
            elif value.isdigit() and int(value) < size:
                v = int(value)
            elif dash and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi) < size:
                v = list(range(int(lo), int(hi) + 1))
            else:
                known = f'{", ".join(names)}, ' if names else ''
                raise ConditionError(f'--condition {part!r}: "{value}" is not a value of {key}; use {known}an index '
                                     f'0-{size - 1} or a range of them like 0-{size // 2 - 1}.')
            out[f] = v
    if not out:
        raise ConditionError('no condition given; pass --condition FACTOR=VALUE.')
    return out


# ----------------------------------------------------------------------------------------------
# Statistics.

@torch.no_grad()
def classify_generated(G, sampler, classifier, num_samples=DEFAULT_SAMPLES, batch=64, seed=0, device='cpu',
                       c=None, noise_mode='const', truncation_psi=1, verbose=True):
    """(genomes int64 [M, num_genes], attributes int64 [M, F]) of M uniformly drawn, classified samples."""
    generator = torch.Generator(device=device).manual_seed(int(seed))
    genomes, labels = [], []
    with Progress(num_samples, desc='classifying generated samples', unit='img', enabled=verbose) as progress:
        for start in range(0, num_samples, batch):
            n = min(batch, num_samples - start)
            latents = sampler.sample(n, device=device, generator=generator)
            cs = torch.zeros([n, G.c_dim], device=device) if c is None else c.expand(n, -1)
            images = G(latents.z, cs, truncation_psi=truncation_psi, noise_mode=noise_mode).float().clamp(-1, 1)
            genomes.append(latents.genes.cpu())
            labels.append(torch.as_tensor(classifier.predict(images)).long().cpu())
            progress.update(n)
    return torch.cat(genomes), torch.cat(labels)


def cooccurrence(genomes, values, num_variants, num_values):
    """counts [num_genes, num_variants, num_values] (float64): how often gene g had variant k with value v."""
    genomes = np.asarray(genomes, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    num_genes = genomes.shape[1]
    counts = np.zeros([num_genes, num_variants, num_values], dtype=np.float64)
    for g in range(num_genes):
        np.add.at(counts[g], (genomes[:, g], values), 1)
    return counts


def variant_distribution(counts, value, alpha=DEFAULT_ALPHA):
    """[num_genes, num_variants]: smoothed naive-Bayes P(variant | value) per gene (value: index or list)."""
    column = counts[:, :, np.atleast_1d(value)].sum(axis=2) + alpha
    return column / column.sum(axis=1, keepdims=True)


def combine(distributions, temperature=1.0):
    """Product of per-gene distributions [num_genes, num_variants] (one per condition), sharpened by 1/T."""
    if temperature <= 0:
        raise ConditionError(f'--condition-temp={temperature} must be positive.')
    log_p = sum(np.log(d) for d in distributions) / float(temperature)
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def naive_bayes_posterior(counts, genomes, alpha=DEFAULT_ALPHA):
    """[M, num_values]: P(value | genome) under the same model (prior = the observed value frequencies)."""
    genomes = np.asarray(genomes, dtype=np.int64)
    num_genes, num_variants, _ = counts.shape
    totals = counts.sum(axis=1)                                           # [G, V]
    log_like = np.log((counts + alpha) / (totals[:, None, :] + num_variants * alpha))
    prior = counts[0].sum(axis=0) + alpha
    scores = np.log(prior / prior.sum())[None, :] + sum(log_like[g, genomes[:, g]] for g in range(num_genes))
    scores -= scores.max(axis=1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=1, keepdims=True)


class GeneConditioner:
    """Per-gene variant distributions realising `conditions` ({factor index: value index or list of them})."""

    def __init__(self, genomes, attributes, conditions, num_variants, factor_sizes, alpha=DEFAULT_ALPHA,
                 temperature=1.0):
        genomes = np.asarray(genomes, dtype=np.int64)
        attributes = np.asarray(attributes, dtype=np.int64)
        self.conditions = dict(conditions)
        self.num_samples = genomes.shape[0]
        self.counts = {f: cooccurrence(genomes, attributes[:, f], num_variants, int(factor_sizes[f]))
                       for f in self.conditions}
        self.probs = combine([variant_distribution(self.counts[f], v, alpha) for f, v in self.conditions.items()],
                             temperature)
        self.base_rate = float(self.hits(attributes).mean()) if self.num_samples else float('nan')
        self.alpha, self.temperature = float(alpha), float(temperature)

    def hits(self, attributes):
        """bool [N]: which rows of attributes [N, F] meet every condition."""
        attributes = np.asarray(attributes)
        ok = np.ones([attributes.shape[0]], dtype=bool)
        for f, v in self.conditions.items():
            ok &= np.isin(attributes[:, f], np.atleast_1d(v))
        return ok

    def sample_genome(self, seed):
        """int64 [1, num_genes]: each gene's variant drawn from its distribution (numpy, reproducible per seed)."""
        rnd = np.random.RandomState(int(seed))
        u = rnd.random_sample([self.probs.shape[0], 1])
        genome = (self.probs.cumsum(axis=1) < u).sum(axis=1)
        return torch.from_numpy(np.minimum(genome, self.probs.shape[1] - 1)[None].astype(np.int64))

    def latent_for_seed(self, sampler, seed, device='cpu'):
        """The seed's latent (its code, if any) with a conditioned genome."""
        base = sampler.sample_seed(seed, device=device)
        return sampler.assemble(base.get('code'), self.sample_genome(seed).to(device))

    def informative_genes(self, top=5):
        """[(gene, KL(P(k | condition) || uniform) in nats)], most informative first."""
        k = self.probs.shape[1]
        kl = (self.probs * np.log(self.probs * k + 1e-30)).sum(axis=1)
        order = np.argsort(-kl)[:top]
        return [(int(g), float(kl[g])) for g in order]


def fit_conditioner(G, sampler, snapshot, conditions, classifier='oracle', num_samples=DEFAULT_SAMPLES,
                    temperature=1.0, **render_kwargs):
    """(GeneConditioner, classifier) for generate.py --condition: load, parse, classify samples, count."""
    if not hasattr(sampler, 'num_variants'):
        raise ConditionError('--condition needs a genes network (train.py --mapping=genes).')
    dataset = dataset_of(snapshot)
    model = load_classifier(classifier, dataset=dataset, device=render_kwargs.get('device', 'cpu'))
    wanted = parse_conditions(conditions, model, dataset)
    genomes, attributes = classify_generated(G, sampler, model, num_samples, **render_kwargs)
    return GeneConditioner(genomes, attributes, wanted, sampler.num_variants, model.factor_sizes,
                           temperature=temperature), model


def write_report(path, conditioner, attributes, condition_text, classifier_name):
    """Write the measured hit rate (JSON, atomically) and return it as a dict."""
    hits = conditioner.hits(attributes)
    report = dict(condition=condition_text, classifier=classifier_name, samples_for_statistics=conditioner.num_samples,
                  base_rate=conditioner.base_rate, conditional_images=int(len(hits)),
                  conditional_hit_rate=float(hits.mean()) if len(hits) else float('nan'),
                  smoothing_alpha=conditioner.alpha, temperature=conditioner.temperature,
                  informative_genes=conditioner.informative_genes())
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)
    return report
