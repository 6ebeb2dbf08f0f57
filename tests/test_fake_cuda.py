"""Placement and sync-freedom on CUDA, proven on a CPU-only build with fake CUDA tensors.

Inside `FakeCuda` (tests/fake_cuda.py) every tensor made on `cuda:0` is a fake CUDA tensor: an op
mixing it with a CPU tensor, a CPU generator drawing for it, a non-scalar CPU-to-CUDA copy, and
any host sync (`.item()`, `bool()`, `nonzero()`, boolean-mask indexing) raise. Each test runs a
real forward path of the project end to end on such tensors and checks what comes out; a test
passes only if the path never leaves the device and never waits for it.
"""

import numpy as np
import pytest
import torch
from fake_cuda import CUDA, FakeCuda, PlacementError, is_fake_cuda
from torch._subclasses.fake_tensor import DataDependentOutputException

import dnnlib
from disentangle import centrality, contrastive, traverse
from disentangle.idgan import DistillationTerm
from disentangle.info_heads import QHead, QNetwork
from disentangle.infogan import InfoTerm
from disentangle.infogan_latent import InfoGANLatent
from disentangle.latents import PosteriorBankLatent, resize_for_encoder
from disentangle.stylegenes import GeneLatent
from networks.stylegan2 import Discriminator, Generator
from networks.vae import Decoder, Encoder
from training.latent import GaussianLatent
from training.loss import StyleGAN2Loss

RES = 16
CODE_DIM = 3
W_DIM = 32


def bank_latent(nuisance_dim=2):
    latent = PosteriorBankLatent(code_dim=CODE_DIM, nuisance_dim=nuisance_dim, verbose=False)
    latent.set_bank(torch.randn(20, CODE_DIM), torch.randn(20, CODE_DIM) - 2)
    return latent


def genes_latent(with_code):
    code = dict(class_name='disentangle.latents.PosteriorBankLatent', code_dim=CODE_DIM, nuisance_dim=0,
                verbose=False) if with_code else None
    latent = GeneLatent(num_genes=4, num_variants=5, code_latent_kwargs=code)
    if with_code:
        latent.code_latent.set_bank(torch.randn(20, CODE_DIM), torch.randn(20, CODE_DIM) - 2)
    return latent


# Every mapping network with the sampler that feeds it: (sampler, mapping_kwargs).
MAPPINGS = {
    'mlp': lambda: (GaussianLatent(z_dim=8), dict(num_layers=2)),
    'code': lambda: (bank_latent(), dict(class_name='disentangle.latents.CodeMappingNetwork', code_dim=CODE_DIM,
                                         num_layers=2)),
    'infogan': lambda: (InfoGANLatent(cat_sizes=(3,), cont_dim=2, noise_dim=2),
                        dict(class_name='disentangle.latents.CodeMappingNetwork', code_dim=5, num_layers=2)),
    'genes': lambda: (genes_latent(False), dict(class_name='disentangle.stylegenes.GeneMappingNetwork',
                                                num_genes=4, num_variants=5)),
    'genes+code': lambda: (genes_latent(True), dict(class_name='disentangle.stylegenes.GeneMappingNetwork',
                                                    num_genes=4, num_variants=5, code_dim=CODE_DIM)),
}


def tiny_G(z_dim, mapping_kwargs, fp16=False):
    fp16_kwargs = dict(num_fp16_res=2, conv_clamp=256) if fp16 else {}
    return Generator(z_dim=z_dim, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=1,
                     mapping_kwargs=mapping_kwargs,
                     synthesis_kwargs=dict(channel_base=256, channel_max=32, **fp16_kwargs))


def tiny_D(fp16=False):
    fp16_kwargs = dict(num_fp16_res=2, conv_clamp=256) if fp16 else {}
    return Discriminator(c_dim=0, img_resolution=RES, img_channels=1, channel_base=256, channel_max=32, **fp16_kwargs)


def no_labels(n):
    return torch.zeros([n, 0], device=CUDA)


# -- the harness itself ---------------------------------------------------------------------------

def test_the_harness_refuses_what_real_cuda_would_refuse_or_wait_for():
    with FakeCuda():
        x = torch.randn(4, device=CUDA)
        with pytest.raises(DataDependentOutputException):
            x.sum().item()                                   # a host sync
        with pytest.raises(DataDependentOutputException):
            bool(x.any())
        with pytest.raises(Exception, match='nonzero'):
            x[x > 0]                                         # data-dependent shape: a sync
        with pytest.raises(PlacementError, match='cpu generator'):
            torch.randn(3, device=CUDA, generator=torch.Generator())
        with pytest.raises(PlacementError, match='host-to-device'):
            torch.ones(3).to(CUDA)
        with pytest.raises(PlacementError, match='host-to-device'):
            torch.ones([]).to(CUDA)                          # scalars too: a blocking copy syncs
        with pytest.raises(PlacementError, match='copies host values'):
            x.new_tensor(3.0)
        assert is_fake_cuda(torch.ones(3).to(CUDA, non_blocking=True))   # from pinned memory: no sync
        with pytest.raises(Exception, match='device'):
            x + torch.ones(4)
        kept = x.clone()
        kept[:2] = 0.0                                       # allowed, as on CUDA: no sync
        assert is_fake_cuda(x * torch.tensor(2.0))           # a 0-dim CPU tensor mixes, as on CUDA
        assert is_fake_cuda(torch.randn(3, device=CUDA, generator=torch.Generator(device=CUDA)))


def test_the_harness_leaves_no_fake_tensor_in_module_caches():
    from torch_utils import misc, training_stats
    with FakeCuda():
        misc._constant_cache['fake-cuda-test'] = torch.ones(1, device=CUDA)
        training_stats.report('FakeCudaTest/value', torch.ones(3, device=CUDA))
    assert not any(is_fake_cuda(t) for t in misc._constant_cache.values())
    assert CUDA not in training_stats._counters['FakeCudaTest/value']


# -- G and D forwards, every mapping ----------------------------------------------------------------

@pytest.mark.parametrize('fp16', [False, True], ids=['fp32', 'fp16-blocks'])
@pytest.mark.parametrize('mapping', sorted(MAPPINGS))
def test_G_and_D_forwards_stay_on_the_device_without_a_sync(mapping, fp16):
    sampler, mapping_kwargs = MAPPINGS[mapping]()
    G, D = tiny_G(sampler.z_dim, mapping_kwargs, fp16), tiny_D(fp16)
    with FakeCuda() as fake:
        sampler, G, D = fake.module(sampler), fake.module(G.train()), fake.module(D)
        latents = sampler.sample(6, device=CUDA, generator=torch.Generator(device=CUDA).manual_seed(0))
        assert all(is_fake_cuda(v) for v in latents.values())
        img = G(latents.z, no_labels(6))                               # training mode: w_avg updates
        assert is_fake_cuda(img) and img.shape == (6, 1, RES, RES) and img.dtype == torch.float32
        eval_img = G.eval()(latents.z, no_labels(6), truncation_psi=0.7, noise_mode='const')
        assert is_fake_cuda(eval_img) and eval_img.shape == (6, 1, RES, RES)
        logits = D(img, no_labels(6))
        assert is_fake_cuda(logits) and logits.shape == (6, 1)


def test_fp16_blocks_run_in_half_precision_on_cuda_only():
    G = tiny_G(8, dict(num_layers=2), fp16=True)
    dtypes = {}

    def record(name):
        def hook(_module, _inputs, output):
            dtypes[name] = output[0].dtype if isinstance(output, tuple) else output.dtype
        return hook
    for name in ('b8', 'b16'):
        getattr(G.synthesis, name).register_forward_hook(record(name))
    with FakeCuda() as fake:
        G = fake.module(G)
        G(torch.randn(2, 8, device=CUDA), no_labels(2))
    assert dtypes == {'b8': torch.float16, 'b16': torch.float16}   # the top 2 resolutions, as num_fp16_res=2
    G_cpu = tiny_G(8, dict(num_layers=2), fp16=True)
    with torch.no_grad():
        img = G_cpu(torch.randn(2, 8), torch.zeros(2, 0))
    assert img.dtype == torch.float32 and torch.isfinite(img).all()  # CPU keeps fp32 blocks


def test_the_loss_renders_with_style_mixing_and_scores_without_a_sync():
    sampler, mapping_kwargs = MAPPINGS['code']()
    G, D = tiny_G(sampler.z_dim, mapping_kwargs), tiny_D()
    with FakeCuda() as fake:
        sampler, G, D = fake.module(sampler), fake.module(G.train()), fake.module(D)
        loss = StyleGAN2Loss(CUDA, G, D, latent_sampler=sampler, style_mixing_prob=1.0)
        latents = sampler.sample(4, device=CUDA)
        img, ws = loss.run_G(latents, no_labels(4))
        assert is_fake_cuda(img) and ws.shape == (4, G.num_ws, W_DIM)
        logits, features = loss.run_D(img, no_labels(4), return_features=True)
        assert is_fake_cuda(logits) and is_fake_cuda(features)


# -- every latent sampler ----------------------------------------------------------------------------

@pytest.mark.parametrize('mapping', sorted(MAPPINGS))
def test_every_sampler_draws_on_the_device_it_is_asked_for(mapping):
    sampler, _mapping_kwargs = MAPPINGS[mapping]()
    with FakeCuda() as fake:
        sampler = fake.module(sampler)
        for generator in (None, torch.Generator(device=CUDA)):
            out = sampler.sample(5, device=CUDA, generator=generator)
            assert out.z.shape == (5, sampler.z_dim)
            assert all(is_fake_cuda(value) for value in out.values()), {k: v.device for k, v in out.items()}


@pytest.mark.parametrize('mapping', ['code', 'infogan', 'genes'])
def test_a_generator_on_another_device_is_one_clear_error(mapping):
    sampler, _mapping_kwargs = MAPPINGS[mapping]()
    with pytest.raises(ValueError, match=r"torch.Generator\(device='cpu'\)"):
        sampler.sample(2, device='cpu', generator=_generator_claiming_cuda())


def _generator_claiming_cuda():
    from fake_cuda import _CudaGeneratorStandIn
    return _CudaGeneratorStandIn()


def test_contrastive_pairs_are_drawn_on_the_device():
    sampler = InfoGANLatent(cat_sizes=(3,), cont_dim=3, noise_dim=2)
    with FakeCuda():
        for gap in (0.0, 1.2):
            a, b, shared = contrastive.contrastive_pairs(sampler, 6, gap=gap, device=CUDA,
                                                         generator=torch.Generator(device=CUDA))
            assert is_fake_cuda(a.z) and is_fake_cuda(b.z) and is_fake_cuda(shared)
            assert a.z.shape == b.z.shape == (6, sampler.z_dim) and shared.shape == (6,)


def test_infogan_categories_out_of_range_are_still_an_error_on_the_cpu():
    sampler = InfoGANLatent(cat_sizes=(3,), cont_dim=1, noise_dim=0)
    with pytest.raises(ValueError, match='categories 0..2, not 3'):
        sampler.assemble(torch.tensor([[3.0, 0.5]]), torch.zeros(1, 0))
    z = sampler.assemble(torch.tensor([[2.0, 0.5], [0.0, -0.5]]), torch.zeros(2, 0)).z
    assert torch.equal(z, torch.tensor([[0.0, 0.0, 1.0, 0.5], [1.0, 0.0, 0.0, -0.5]]))


# -- loss terms: the distillation encoder, InfoGAN's Q -------------------------------------------------

def test_the_distillation_term_encodes_fakes_on_the_device_without_a_sync():
    sampler = bank_latent()
    E = Encoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM)
    term = DistillationTerm(None, None, sampler, None, 'cpu', encoder=E, distill_weight=0.1, distill_warmup=1)
    with FakeCuda() as fake:
        sampler, E = fake.module(sampler), fake.module(term.E)
        term.min_logvar = fake.tensor(term.min_logvar)     # what __init__ puts on the device given to it
        latents = sampler.sample(4, device=CUDA)
        ctx = dnnlib.EasyDict(latents=latents, gen_img=torch.randn(4, 1, 2 * RES, 2 * RES, device=CUDA), cur_nimg=500,
                              loss=dnnlib.EasyDict(amp_dtype=None))
        assert resize_for_encoder(ctx.gen_img, E.img_resolution).shape == (4, 1, RES, RES)   # fakes area-resized
        loss = term.g_loss(ctx)
        assert is_fake_cuda(loss) and loss.shape == (4,)


def test_the_infogan_term_and_Q_run_on_the_device_without_a_sync():
    sampler = InfoGANLatent(cat_sizes=(3,), cont_dim=2, noise_dim=2)
    D = tiny_D()
    term = InfoTerm(None, D, sampler, None, 'cpu')
    with FakeCuda() as fake:
        D = fake.module(D)
        fake.module(term.head)
        latents = sampler.sample(4, device=CUDA)
        ctx = dnnlib.EasyDict(latents=latents, gen_img=torch.randn(4, 1, RES, RES, device=CUDA), gen_c=no_labels(4),
                              D=D, loss=dnnlib.EasyDict(augment_pipe=None, amp_dtype=None), gen_features=None)
        assert is_fake_cuda(term.g_loss(ctx)) and is_fake_cuda(term.d_loss(ctx))
        codes = term.Q(ctx.gen_img)
        assert is_fake_cuda(codes) and codes.shape == (4, sampler.code_dim)


# -- traversals and ModelCentrality -------------------------------------------------------------------

@pytest.mark.parametrize('mapping', ['code', 'infogan', 'genes+code'])
def test_traversal_latents_and_rendering_stay_on_the_device(mapping):
    sampler, mapping_kwargs = MAPPINGS[mapping]()
    G = tiny_G(sampler.z_dim, mapping_kwargs).eval()
    dims = [0, 1]
    ranges = torch.tensor([[-1.0, 1.0], [-2.0, 2.0]])                   # host values, computed once per run
    with FakeCuda() as fake:
        sampler, G = fake.module(sampler), fake.module(G)
        base = sampler.sample(1, device=CUDA).z
        z = traverse.traversal_latents(base, dims, ranges, steps=3)
        assert is_fake_cuda(z) and z.shape == (6, sampler.z_dim)
        images = traverse.render(G, z, batch=4)
        assert images.shape == (6, 1, RES, RES) and images.dtype == torch.uint8   # copied to the host to save


def centrality_models():
    """(ID-GAN, InfoGAN, VAE) snapshots as select_model.py loads them."""
    idgan_latent, idgan_mapping = MAPPINGS['code']()
    info_latent = InfoGANLatent(cat_sizes=(3,), cont_dim=2, noise_dim=2)
    D = tiny_D()
    Q = QNetwork(D, QHead(D.feature_dim, info_latent.cat_sizes, info_latent.cont_dim))
    return {
        'idgan': dict(G_ema=tiny_G(idgan_latent.z_dim, idgan_mapping), latent=idgan_latent,
                      E=Encoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM)),
        'infogan': dict(G_ema=tiny_G(info_latent.z_dim, MAPPINGS['infogan']()[1]), latent=info_latent, Q=Q),
        'vae': dict(E=Encoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM),
                    Dec=Decoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM)),
    }


@pytest.mark.parametrize('kind', ['idgan', 'infogan', 'vae'])
def test_model_centrality_renders_labelled_groups_on_the_device(kind):
    snapshot = centrality_models()[kind]
    with FakeCuda() as fake:
        snapshot = {key: fake.module(value) for key, value in snapshot.items()}
        model = centrality.SnapshotModel(snapshot, name=kind, device=CUDA, batch=4)
        generator = centrality.data_generator(model, seed=0)
        assert generator.device.type == 'cuda'
        free = model.render(*model.sample(6, generator))
        assert is_fake_cuda(free) and free.shape == (6, 1, RES, RES) and free.dtype == torch.uint8
        for label, codes, rest in centrality.labelled_groups(model, 3, 4, generator):
            assert is_fake_cuda(codes) and codes.shape == (4, model.num_codes)
            assert is_fake_cuda(model.render(codes, rest))


def test_model_centrality_still_scores_identical_models_identically_on_the_cpu():
    snapshot = centrality_models()['idgan']
    models = [centrality.SnapshotModel(snapshot, name=name, batch=8) for name in ('a', 'b')]
    scores = centrality.cross_scores(models, num_groups=6, group_size=4, std_samples=16, verbose=False)
    assert scores.shape == (2, 2) and np.allclose(scores, scores[0, 0])
