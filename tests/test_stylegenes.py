"""StyleGenes: the gene-bank mapping and sampler, --mapping=genes, gene editing, conditional sampling."""

import itertools
import json
import os
import pickle

import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from fresh_process import run_python
from test_idgan import CODE_DIM, SquaresDataset, idgan_loop_kwargs  # the ID-GAN tests' data and tiny run

import dnnlib
from disentangle.idgan import DistillationTerm
from disentangle.stylegenes import GeneError, GeneLatent, GeneMappingNetwork, mapping_cost
from networks.stylegan2 import Generator, MappingNetwork
from networks.vae import Encoder
from torch_utils import misc
from training import training_loop as tl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = 16
GENES, VARIANTS, W_DIM = 3, 4, 12          # gene_dim 4: gene g owns w[4g:4g+4]


def genes_generator(code_dim=0, gene_dim=None, seed=0, c_dim=0):
    torch.manual_seed(seed)
    mapping = dict(class_name='disentangle.stylegenes.GeneMappingNetwork', num_genes=GENES, num_variants=VARIANTS,
                   gene_dim=gene_dim, code_dim=code_dim, num_layers=2)
    return Generator(z_dim=code_dim + GENES, c_dim=c_dim, w_dim=W_DIM, img_resolution=RES, img_channels=1,
                     mapping_kwargs=mapping, synthesis_kwargs=dict(channel_base=128, channel_max=8))


def all_genomes():
    return torch.tensor(list(itertools.product(range(VARIANTS), repeat=GENES)), dtype=torch.float32)


def coded_sampler():
    torch.manual_seed(0)
    E = Encoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM).eval().requires_grad_(False)
    sampler = GeneLatent(GENES, VARIANTS, code_latent_kwargs=dict(
        class_name='disentangle.latents.PosteriorBankLatent', code_dim=CODE_DIM, bank_size=16, verbose=False))
    sampler.prepare(SquaresDataset(), encoder=E)
    return sampler, E


# ----------------------------------------------------------------------------------------------
# The bank and the sampler.

def test_every_one_of_the_K_to_the_N_genomes_gives_a_distinct_w():
    mapping = genes_generator().mapping
    sampler = GeneLatent(GENES, VARIANTS)
    assert sampler.num_distinct_genomes == VARIANTS ** GENES == 64
    w = mapping(all_genomes(), None)[:, 0]                                   # [64, W_DIM]
    assert w.shape == (64, W_DIM)
    assert torch.cdist(w, w).add(torch.eye(64) * 1e9).min() > 1e-3
    z = sampler.sample(4000, generator=torch.Generator().manual_seed(0)).z
    assert len({tuple(row) for row in z.long().tolist()}) == 64             # uniform draws reach them all


def test_sampler_draws_uniform_integer_genomes_reproducibly():
    sampler = GeneLatent(GENES, VARIANTS)
    out = sampler.sample(6000, generator=torch.Generator().manual_seed(1))
    assert out.genes.dtype == torch.int64 and torch.equal(out.z, out.genes.float())
    freq = torch.bincount(out.genes[:, 1], minlength=VARIANTS).float() / 6000
    assert torch.allclose(freq, torch.full([VARIANTS], 0.25), atol=0.03)
    assert torch.equal(sampler.sample_seed(5).z, sampler.sample_seed(5).z)
    assert not torch.equal(sampler.sample_seed(5).z, sampler.sample_seed(6).z)
    assert sampler.layout()['kind'] == 'genes' and sampler.layout()['distinct_genomes'] == '64'


def test_gene_g_owns_exactly_its_slice_of_w():
    mapping = genes_generator().mapping
    z = torch.tensor([[0., 1., 2.]])
    for gene in range(GENES):
        swapped = z.clone()
        swapped[0, gene] = 3
        diff = (mapping(swapped, None) - mapping(z, None))[0, 0].abs() > 0
        start, stop = mapping.gene_slice(gene)
        assert diff[start:stop].all() and diff.sum() == stop - start
        expected = mapping.bank[gene, 3] * mapping.bank_gain
        assert torch.equal(mapping(swapped, None)[0, 0, start:stop], expected)


def test_gradients_reach_only_the_chosen_variants():
    mapping = genes_generator().mapping
    z = torch.tensor([[0., 3., 1.], [2., 3., 1.]])
    mapping(z, None).square().sum().backward()
    used = mapping.bank.grad.abs().sum(dim=2) > 0                           # [GENES, VARIANTS]
    expected = torch.zeros([GENES, VARIANTS], dtype=torch.bool)
    expected[0, 0] = expected[0, 2] = expected[1, 3] = expected[2, 1] = True
    assert torch.equal(used, expected)


def test_w_avg_is_the_mean_w_over_all_genomes_and_truncation_lerps_to_it():
    mapping = genes_generator().mapping.eval()
    w = mapping(all_genomes(), None)[:, 0]
    assert torch.allclose(mapping.w_avg, w.mean(dim=0), atol=1e-6)
    z = all_genomes()[:5]
    assert torch.allclose(mapping(z, None, truncation_psi=0)[:, 0], mapping.w_avg.expand(5, -1), atol=1e-6)
    half = mapping(z, None, truncation_psi=0.5)
    assert torch.allclose(half, 0.5 * (mapping(z, None) + mapping.w_avg), atol=1e-6)


def test_explicit_gene_dim_projects_to_w_dim():
    mapping = genes_generator(gene_dim=5).mapping
    assert mapping.proj is not None and mapping.gene_slice(0) is None
    assert mapping(all_genomes()[:3], None).shape == (3, genes_generator().num_ws, W_DIM)


def test_gene_bank_costs_no_multiplies_and_far_fewer_parameters_than_the_mlp():
    genes = GeneMappingNetwork(z_dim=16, c_dim=0, w_dim=512, num_ws=10, num_genes=16, num_variants=32)
    mlp = MappingNetwork(z_dim=512, c_dim=0, w_dim=512, num_ws=10, num_layers=8)
    assert mapping_cost(genes) == dict(params=16 * 32 * 32, bank_params=16 * 32 * 32, macs=0,
                                       bytes=(16 * 32 * 32 + 512) * 4)
    assert mapping_cost(mlp)['macs'] == 8 * 512 * 512


def test_bad_genomes_and_gene_options_are_clear_errors():
    mapping = genes_generator().mapping.eval()   # what generation runs; a training step is not checked
    with pytest.raises(GeneError, match='variant index 4 in the genome in z is out of range'):
        mapping(torch.tensor([[0., 4., 1.]]), None)
    with pytest.raises(GeneError, match='non-integer values'):
        mapping(torch.randn(2, GENES), None)
    with pytest.raises(GeneError, match='--genes=0 is invalid'):
        GeneLatent(0, 4)
    mapping.train()   # unchecked (a host sync per step on a GPU), but never outside the bank
    torch.testing.assert_close(mapping(torch.tensor([[0., 4., 1.]]), None, skip_w_avg_update=True),
                               mapping(torch.tensor([[0., 3., 1.]]), None, skip_w_avg_update=True))
    with pytest.raises(GeneError, match='does not divide w_dim=12'):
        GeneMappingNetwork(z_dim=5, c_dim=0, w_dim=12, num_ws=2, num_genes=5, num_variants=4)


# ----------------------------------------------------------------------------------------------
# With ID-GAN's code.

def test_idgan_code_still_moves_w_and_images_and_the_genes_keep_their_slices():
    sampler, _E = coded_sampler()
    G = genes_generator(code_dim=CODE_DIM).eval()
    base = sampler.sample_seed(0)
    moved = sampler.assemble(base.code + 1.0, base.genes)
    assert sampler.z_dim == CODE_DIM + GENES and torch.equal(moved.z[:, CODE_DIM:], base.z[:, CODE_DIM:])
    w0, w1 = G.mapping(base.z, None), G.mapping(moved.z, None)
    assert (w1 - w0).abs().min() > 0                         # the code offset reaches every style dimension
    img0, img1 = (G(x.z, None, noise_mode='const') for x in (base, moved))
    assert (img1 - img0).abs().mean() > 1e-3
    swapped = sampler.assemble(base.code, torch.full_like(base.genes, 3))
    diff = (G.mapping(swapped.z, None) - w0)[0, 0].abs() > 0
    changed = [g for g in range(GENES) if base.genes[0, g] != 3]
    assert diff.sum() == 4 * len(changed)


def test_distillation_term_applies_to_genes_with_a_code():
    sampler, E = coded_sampler()
    G = genes_generator(code_dim=CODE_DIM).train()
    term = DistillationTerm(G, None, sampler, None, 'cpu', encoder=E, distill_weight=1.0, distill_warmup=0)
    assert term.min_logvar is not None and torch.equal(term.min_logvar, sampler.bank_logvar.min(dim=0).values)
    latents = sampler.sample(4, generator=torch.Generator().manual_seed(0))
    img = G(latents.z, None)
    ctx = dnnlib.EasyDict(latents=latents, gen_img=img, cur_nimg=0)
    loss = term.g_loss(ctx)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert G.mapping.code_fc0.weight.grad.abs().sum() > 0    # the term trains the code path
    assert not any(p.requires_grad for p in E.parameters())


def test_genes_sampler_without_code_has_no_code_attributes():
    sampler = GeneLatent(GENES, VARIANTS)
    assert not hasattr(sampler, 'code_dim') and not hasattr(sampler, 'bank_logvar')
    with pytest.raises(GeneError, match='no code to traverse'):
        sampler.code_quantiles()


# ----------------------------------------------------------------------------------------------
# Snapshots, training, train.py.

@pytest.fixture(scope='module')
def genes_idgan_run(tmp_path_factory):
    """A few genes + ID-GAN training steps through the real loop; returns the last snapshot."""
    vae, c = idgan_loop_kwargs(tmp_path_factory.mktemp('genes'))
    code_latent = dict(c.latent_kwargs, nuisance_dim=0)
    c.latent_kwargs = dnnlib.EasyDict(class_name='disentangle.stylegenes.GeneLatent', num_genes=GENES,
                                      num_variants=VARIANTS, code_latent_kwargs=code_latent)
    c.G_kwargs = dnnlib.EasyDict(c.G_kwargs, w_dim=W_DIM, mapping_kwargs=dnnlib.EasyDict(
        class_name='disentangle.stylegenes.GeneMappingNetwork', num_genes=GENES, num_variants=VARIANTS,
        code_dim=CODE_DIM, num_layers=1))
    c.loss_kwargs = dnnlib.EasyDict(c.loss_kwargs, style_mixing_prob=0.5)   # mixing draws a second genome
    return tl.training_loop(**c), c.run_dir


def test_training_moves_the_bank_and_logs_the_distillation(genes_idgan_run):
    last, run_dir = genes_idgan_run
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f]
    assert 'Loss/IDGAN/distill' in stats[-1]
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    assert snap['latent'].layout()['kind'] == 'genes' and snap['latent'].code_dim == CODE_DIM
    bank, ema_bank = snap['G'].mapping.bank, snap['G_ema'].mapping.bank
    assert bank.shape == (GENES, VARIANTS, W_DIM // GENES) and torch.isfinite(bank).all()
    assert not torch.equal(bank, ema_bank)          # G_ema lags G: the optimiser moved the bank
    assert snap['G'].mapping.offset_avg.abs().sum() > 0       # the code offset's mean is tracked


def test_snapshot_round_trips_in_a_fresh_process_without_the_plugin(genes_idgan_run, tmp_path):
    last, _run_dir = genes_idgan_run
    script = (
        'import pickle, sys, torch\n'
        'sys.modules["disentangle"] = None\n'
        f'snap = pickle.load(open({last!r}, "rb"))\n'
        'lat = snap["latent"].sample_seed(3)\n'
        'img = snap["G_ema"](lat.z, torch.zeros(1, 0), noise_mode="const")\n'
        'print(tuple(img.shape), snap["latent"].layout()["kind"], lat.genes.tolist(), float(img.sum()))\n')
    out = run_python(script, tmp_path)
    assert out.returncode == 0, out.stderr
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    lat = snap['latent'].sample_seed(3)
    img = snap['G_ema'](lat.z, torch.zeros(1, 0), noise_mode='const')
    assert out.stdout.startswith(f'(1, 1, {RES}, {RES}) genes {lat.genes.tolist()}')
    assert float(out.stdout.split()[-1]) == pytest.approx(float(img.sum()), abs=1e-4)


def _train_cli(args):
    import train
    return CliRunner().invoke(train.main, args)


def test_cli_configures_genes_for_stylegan2_and_rejects_stray_options(tmp_path):
    result = _train_cli([f'--outdir={tmp_path}', '--data=dsprites', '--mapping=genes', '--genes=8', '--variants=5',
                         '--dry-run'])
    assert result.exit_code == 0, result.output
    assert '"class_name": "disentangle.stylegenes.GeneMappingNetwork"' in result.output
    assert '"num_genes": 8' in result.output and '"num_variants": 5' in result.output
    assert 'dsprites-stylegan2-genes-batch' in result.output
    for args, message in [(['--genes=8'], '--genes does not apply to --mapping=mlp; add --mapping=genes'),
                          (['--mapping=genes', '--genes=0'], "'--genes': 0 is not in the range"),
                          (['--mapping=genes', '--genes=7'], '--genes=7 does not divide w_dim=512'),
                          (['--mapping=tree'], 'unknown --mapping=tree; choose one of: genes, mlp')]:
        result = _train_cli([f'--outdir={tmp_path}', '--data=dsprites', *args, '--dry-run'])
        assert result.exit_code != 0 and message in result.output, result.output
        assert 'Traceback' not in result.output


def test_cli_composes_genes_with_idgan(tmp_path):
    torch.manual_seed(0)
    vae = str(tmp_path / 'vae.pkl')
    misc.atomic_pickle_dump(dict(E=Encoder(img_resolution=64, img_channels=1, code_dim=CODE_DIM).eval()), vae)
    result = _train_cli([f'--outdir={tmp_path}', '--data=dsprites', '--cfg=idgan', f'--vae={vae}', '--mapping=genes',
                         '--dry-run'])
    assert result.exit_code == 0, result.output
    options = result.output[result.output.index('{'):result.output.index('Output directory')]
    c = json.loads(options)
    assert c['latent_kwargs']['class_name'] == 'disentangle.stylegenes.GeneLatent'
    assert c['latent_kwargs']['code_latent_kwargs']['class_name'] == 'disentangle.latents.PosteriorBankLatent'
    assert c['G_kwargs']['mapping_kwargs']['code_dim'] == CODE_DIM
    assert c['extra_terms_kwargs'][0]['class_name'] == 'disentangle.idgan.DistillationTerm'
    result = _train_cli([f'--outdir={tmp_path}', '--data=dsprites', '--cfg=idgan', f'--vae={vae}', '--mapping=genes',
                         '--nuisance-dim=4', '--dry-run'])
    assert result.exit_code != 0 and '--nuisance-dim does not apply with --mapping=genes' in result.output


def test_registry_collects_the_mapping_choice():
    import train
    from disentangle import configs, stylegenes
    assert configs.MAPPINGS['genes'] is stylegenes.configure_genes
    assert set(train._mapping_choices()) == {'mlp', 'genes'}


def test_generate_on_genes_with_a_code_traverses_both_and_encodes(genes_idgan_run, tmp_path):
    import generate
    last, _run_dir = genes_idgan_run
    result = CliRunner().invoke(generate.main, [f'--network={last}', '--traverse', '--dims=1', '--steps=3', '--seeds=0',
                                                f'--outdir={tmp_path}'])
    assert result.exit_code == 0, result.output
    with PIL.Image.open(tmp_path / 'traverse-genes-seed0000.png') as png:
        assert png.size[1] == RES                                    # one gene row
    with PIL.Image.open(tmp_path / 'traverse-seed0000.png') as png:
        assert png.size[1] == CODE_DIM * RES                         # every code dimension
    path = str(tmp_path / 'in.png')
    PIL.Image.fromarray(SquaresDataset().images[0, 0], 'L').save(path)
    result = CliRunner().invoke(generate.main, [f'--network={last}', f'--encode={path}', '--swap-gene', '0=1',
                                                '--seeds=0', f'--outdir={tmp_path}/e'])
    assert result.exit_code == 0, result.output
    assert 'encode-in-seed0000.png' in os.listdir(tmp_path / 'e')
