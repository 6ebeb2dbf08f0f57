"""Gene editing in generate.py (--genes, --swap-gene, --traverse) and classifier-based conditional sampling."""

import json
import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from disentangle import gene_conditioning as gc
from disentangle import traverse
from disentangle.stylegenes import GeneLatent
from networks.stylegan2 import Generator
from torch_utils import misc

RES = 16
GENES, VARIANTS, W_DIM = 3, 4, 12


def genes_generator(seed=0):
    torch.manual_seed(seed)
    mapping = dict(class_name='disentangle.stylegenes.GeneMappingNetwork', num_genes=GENES, num_variants=VARIANTS)
    return Generator(z_dim=GENES, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=1, mapping_kwargs=mapping,
                     synthesis_kwargs=dict(channel_base=128, channel_max=8)).eval().requires_grad_(False)


@pytest.fixture(scope='module')
def snapshots(tmp_path_factory):
    root = tmp_path_factory.mktemp('gene_snaps')
    genes = str(root / 'genes.pkl')
    misc.atomic_pickle_dump(dict(G_ema=genes_generator(), latent=GeneLatent(GENES, VARIANTS),
                                 training_set_kwargs=dict(path='dsprites')), genes)
    torch.manual_seed(0)
    plain = str(root / 'plain.pkl')
    misc.atomic_pickle_dump(dict(G_ema=Generator(z_dim=8, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=1,
                                                 mapping_kwargs=dict(num_layers=1),
                                                 synthesis_kwargs=dict(channel_base=128, channel_max=8))), plain)
    return genes, plain


def _generate(args):
    return CliRunner().invoke(generate.main, args)


def _png(path):
    with PIL.Image.open(path) as image:
        return np.asarray(image).astype(np.int64)


def _render(G, genome):
    img = G(torch.tensor([genome], dtype=torch.float32), torch.zeros(1, 0), noise_mode='const')
    return generate.to_uint8(img)[0, 0].numpy().astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Editing.

def test_apply_gene_edits_sets_the_genome_then_the_swaps():
    sampler = GeneLatent(GENES, VARIANTS)
    latents = sampler.sample_seed(0)
    genome = traverse.parse_genome('1,2,3', sampler)
    out = traverse.apply_gene_edits(latents, sampler, genome, {0: 0})
    assert out.genes.tolist() == [[0, 2, 3]] and out.z.tolist() == [[0., 2., 3.]]
    swapped = traverse.apply_gene_edits(latents, sampler, None, traverse.parse_swaps(['2=1'], sampler))
    assert swapped.genes[0, :2].tolist() == latents.genes[0, :2].tolist() and swapped.genes[0, 2] == 1


def test_generate_renders_a_given_genome_and_a_swapped_gene(snapshots, tmp_path):
    genes, _plain = snapshots
    G = genes_generator()
    result = _generate([f'--network={genes}', '--genes=1,2,3', '--seeds=0-1', f'--outdir={tmp_path}/a'])
    assert result.exit_code == 0, result.output
    assert np.array_equal(_png(tmp_path / 'a' / 'seed0000.png'), _render(G, [1, 2, 3]))
    assert np.array_equal(_png(tmp_path / 'a' / 'seed0001.png'), _render(G, [1, 2, 3]))
    seed_genome = GeneLatent(GENES, VARIANTS).sample_seed(4).genes[0].tolist()
    result = _generate([f'--network={genes}', '--swap-gene', '1=0', '--seeds=4', f'--outdir={tmp_path}/b'])
    assert result.exit_code == 0, result.output
    assert np.array_equal(_png(tmp_path / 'b' / 'seed0004.png'), _render(G, [seed_genome[0], 0, seed_genome[2]]))


def test_generate_gene_traversal_has_one_row_per_gene_and_one_column_per_variant(snapshots, tmp_path):
    genes, _plain = snapshots
    result = _generate([f'--network={genes}', '--traverse', '--dims=0,2', '--seeds=0-1', f'--outdir={tmp_path}'])
    assert result.exit_code == 0, result.output
    assert {'traverse-genes-seed0000.png', 'traverse-genes-seed0001.gif'} <= set(os.listdir(tmp_path))
    assert not any(name.startswith('traverse-seed') for name in os.listdir(tmp_path))
    with PIL.Image.open(tmp_path / 'traverse-genes-seed0001.png') as png:
        assert png.size == (traverse.LABEL_WIDTH + VARIANTS * RES, 2 * RES)
    G = genes_generator()
    grid = _png(tmp_path / 'traverse-genes-seed0001.png')
    genome = GeneLatent(GENES, VARIANTS).sample_seed(1).genes[0].tolist()
    tile = grid[RES:2 * RES, traverse.LABEL_WIDTH + 3 * RES:traverse.LABEL_WIDTH + 4 * RES]   # row gene 2, variant 3
    assert np.array_equal(tile, _render(G, [genome[0], genome[1], 3]))


@pytest.mark.parametrize('args, message', [
    (['--genes=1,2'], '--genes lists 2 variants but this network has 3 genes'),
    (['--genes=1,9,0'], '--genes: variant 9 is out of range; this network has variants 0-3'),
    (['--genes=a,b,c'], 'not a comma-separated list'),
    (['--swap-gene', '5=1'], 'gene 5 does not exist'),
    (['--swap-gene', '1=4'], 'variant 4 is out of range'),
    (['--swap-gene', '1'], 'is not GENE=VARIANT'),
    (['--traverse', '--dims=3'], 'gene 3 does not exist'),
    (['--set', '0=1.5'], 'this genes network has none; use --swap-gene'),
])
def test_generate_rejects_bad_gene_options(snapshots, tmp_path, args, message):
    genes, _plain = snapshots
    result = _generate([f'--network={genes}', *args, f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and message in result.output, result.output
    assert 'Traceback' not in result.output


def test_gene_options_on_a_plain_network_are_clear_errors(snapshots, tmp_path):
    _genes, plain = snapshots
    for args in (['--swap-gene', '1=2'], ['--genes=1,2,3'], ['--condition', 'shape=heart']):
        result = _generate([f'--network={plain}', *args, f'--outdir={tmp_path}'])
        assert result.exit_code != 0 and 'needs a genes network (train.py --mapping=genes)' in result.output, \
            result.output


def test_generate_works_for_genes_snapshots_without_the_plugin(snapshots, tmp_path, monkeypatch):
    genes, _plain = snapshots
    for name in [m for m in sys.modules if m == 'disentangle' or m.startswith('disentangle.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'disentangle', None)
    result = _generate([f'--network={genes}', '--seeds=0-1', f'--outdir={tmp_path}'])
    assert result.exit_code == 0, result.output
    result = _generate([f'--network={genes}', '--swap-gene', '1=2', f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and 'need the disentangle/ plug-in' in result.output


# ----------------------------------------------------------------------------------------------
# Conditional sampling.

def planted_data(num=6000, seed=0):
    """Attribute = 1 exactly when gene 1 has variant 0 or 1 (10% label noise); other genes unrelated."""
    rnd = np.random.RandomState(seed)
    genomes = rnd.randint(VARIANTS, size=[num, GENES])
    attribute = (genomes[:, 1] < 2).astype(np.int64)
    flip = rnd.random_sample(num) < 0.1
    attribute[flip] = 1 - attribute[flip]
    return genomes, attribute[:, None]


def test_variant_distribution_follows_a_planted_relation():
    genomes, attributes = planted_data()
    conditioner = gc.GeneConditioner(genomes, attributes, {0: 1}, VARIANTS, factor_sizes=[2])
    # P(k | attribute=1) for gene 1: 0.9 * 0.5 / 0.5 = 0.45 on each of variants 0, 1 and 0.05 on 2, 3.
    assert np.allclose(conditioner.probs[1], [0.45, 0.45, 0.05, 0.05], atol=0.03)
    assert np.allclose(conditioner.probs[[0, 2]], 0.25, atol=0.03)      # unrelated genes stay uniform
    assert conditioner.base_rate == pytest.approx(0.5, abs=0.03)
    assert conditioner.informative_genes(1)[0][0] == 1
    drawn = torch.cat([conditioner.sample_genome(s) for s in range(2000)])
    assert (drawn[:, 1] < 2).float().mean() == pytest.approx(0.9, abs=0.03)
    assert torch.equal(conditioner.sample_genome(7), conditioner.sample_genome(7))
    sharp = gc.GeneConditioner(genomes, attributes, {0: 1}, VARIANTS, factor_sizes=[2], temperature=0.25)
    assert sharp.probs[1, :2].sum() > 0.99


def test_smoothing_keeps_mass_on_unseen_variants_and_conditions_multiply():
    counts = np.zeros([1, 3, 2])
    counts[0, 0, 1] = 8
    assert np.allclose(gc.variant_distribution(counts, 1, alpha=1.0), [[9 / 11, 1 / 11, 1 / 11]])
    a, b = np.array([[0.5, 0.25, 0.25]]), np.array([[0.2, 0.6, 0.2]])
    assert np.allclose(gc.combine([a, b]), [[0.1, 0.15, 0.05]] / np.float64(0.3))


def test_a_range_condition_pools_its_values():
    genomes, attributes = planted_data()
    pooled = gc.GeneConditioner(genomes, attributes, {0: [0, 1]}, VARIANTS, factor_sizes=[2])
    assert np.allclose(pooled.probs, 0.25, atol=0.03) and pooled.base_rate == 1.0   # every value: no information


def test_naive_bayes_posterior_recovers_the_planted_attribute():
    genomes, attributes = planted_data()
    counts = gc.cooccurrence(genomes, attributes[:, 0], VARIANTS, 2)
    assert counts.sum() == GENES * len(genomes)
    p = gc.naive_bayes_posterior(counts, np.array([[3, 0, 2], [3, 3, 2]]))
    assert p[0, 1] == pytest.approx(0.9, abs=0.03) and p[1, 1] == pytest.approx(0.1, abs=0.03)


class _BrightnessOfGene0(torch.nn.Module):
    """A stand-in generator: the image is white when gene 0 < 2, else black (z_dim = GENES)."""
    c_dim = 0

    def forward(self, z, c, truncation_psi=1, noise_mode='const'):
        white = (z[:, 0] < 2).float() * 2 - 1
        return white[:, None, None, None].expand(-1, 1, 4, 4)


class _BrightClassifier:
    factor_names, factor_sizes = ('bright',), (2,)

    def predict(self, images):
        return (images.mean(dim=[1, 2, 3]) > 0).long()[:, None]


def test_classified_samples_drive_conditional_genomes_to_the_attribute():
    sampler, classifier = GeneLatent(GENES, VARIANTS), _BrightClassifier()
    genomes, attributes = gc.classify_generated(_BrightnessOfGene0(), sampler, classifier, num_samples=400, batch=64,
                                                verbose=False)
    assert genomes.shape == (400, GENES) and attributes.shape == (400, 1)
    assert torch.equal(attributes[:, 0], (genomes[:, 0] < 2).long())
    conditioner = gc.GeneConditioner(genomes, attributes, {0: 0}, VARIANTS, classifier.factor_sizes,
                                     temperature=0.5)
    latents = torch.cat([conditioner.latent_for_seed(sampler, s).z for s in range(200)])
    hits = conditioner.hits(classifier.predict(_BrightnessOfGene0()(latents, None)).numpy())
    assert conditioner.base_rate == pytest.approx(0.5, abs=0.07) and hits.mean() > 0.97


def test_parse_conditions_accepts_value_names_and_indices_and_rejects_others():
    class Oracle:
        factor_names, factor_sizes = ('shape', 'scale'), (3, 6)
    assert gc.parse_conditions(['shape=heart', 'scale=4'], Oracle(), 'dsprites') == {0: 2, 1: 4}
    assert gc.parse_conditions(['scale=1-3'], Oracle(), 'dsprites') == {1: [1, 2, 3]}
    for item, message in [('colour=red', 'knows no factor "colour"'), ('shape=star', 'use square, ellipse, heart, an'),
                          ('scale=6', 'an index 0-5'), ('scale=4-6', 'an index 0-5'), ('shape', 'is not FACTOR=VALUE')]:
        with pytest.raises(gc.ConditionError, match=message):
            gc.parse_conditions([item], Oracle(), 'dsprites')


class _ScriptedBrightness(torch.nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold
        self.factor_names = ['bright']
        self.factor_sizes = [2]

    def forward(self, images):
        m = images.mean(dim=[1, 2, 3]) - self.threshold
        return torch.stack([-m, m], dim=1)


def test_generate_condition_with_a_torchscript_classifier_writes_the_measured_hit_rate(snapshots, tmp_path):
    genes, _plain = snapshots
    G = genes_generator()
    z = torch.tensor([[a, b, c] for a in range(4) for b in range(4) for c in range(4)], dtype=torch.float32)
    threshold = float(G(z, torch.zeros(64, 0), noise_mode='const').mean(dim=[1, 2, 3]).median())
    path = str(tmp_path / 'bright.pt')
    torch.jit.save(torch.jit.script(_ScriptedBrightness(threshold)), path)
    result = _generate([f'--network={genes}', '--condition', 'bright=1', f'--classifier={path}',
                        '--condition-samples=256', '--condition-temp=0.3', '--seeds=0-39', f'--outdir={tmp_path}/o'])
    assert result.exit_code == 0, result.output
    with open(tmp_path / 'o' / 'condition.json') as f:
        report = json.load(f)
    assert report['conditional_images'] == 40 and report['samples_for_statistics'] == 256
    assert 0.3 < report['base_rate'] < 0.7 and report['conditional_hit_rate'] > report['base_rate'] + 0.2
    assert 'hit rate' in result.output and len([n for n in os.listdir(tmp_path / 'o') if n.endswith('.png')]) == 40


def test_bad_classifier_and_condition_are_clear_errors(snapshots, tmp_path):
    genes, _plain = snapshots
    result = _generate([f'--network={genes}', '--condition', 'bright=1', f'--classifier={tmp_path}/none.pt',
                        f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and 'does not exist; pass "oracle" or a classifier file' in result.output
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a model')
    result = _generate([f'--network={genes}', '--condition', 'bright=1', f'--classifier={junk}', f'--outdir={tmp_path}'])
    assert result.exit_code != 0 and 'is neither TorchScript nor a pickle' in result.output
