"""Specification of networks/stylegan2.py: shapes, initialisation, mapping, modulation, noise,
gradients, plug-in seams, pickling and reduced precision. Small channel counts keep it fast."""

import copy
import pickle

import numpy as np
import pytest
import torch

from networks import stylegan2
from networks.stylegan2 import (
    Conv2dLayer,
    Discriminator,
    FullyConnectedLayer,
    Generator,
    MappingNetwork,
    MinibatchStdLayer,
    NetworkConfigError,
)
from torch_utils import persistence

SMALL = {'channel_base': 1024, 'channel_max': 32}




def make_generator(resolution=32, img_channels=3, c_dim=0, z_dim=16, w_dim=16, seed=0, **synthesis):
    torch.manual_seed(seed)
    return Generator(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution,
                     img_channels=img_channels, mapping_kwargs={'num_layers': 2},
                     synthesis_kwargs={**SMALL, **synthesis})


def make_discriminator(resolution=32, img_channels=3, c_dim=0, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Discriminator(c_dim=c_dim, img_resolution=resolution, img_channels=img_channels,
                         **{**SMALL, **kwargs})


def latents(generator, batch=4, seed=1):
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn([batch, generator.z_dim], generator=rng)
    c = torch.zeros([batch, generator.c_dim])
    if generator.c_dim:
        c[torch.arange(batch), torch.arange(batch) % generator.c_dim] = 1
    return z, c


def set_noise_strength(generator, value):
    for name, param in generator.named_parameters():
        if name.endswith('noise_strength'):
            param.data.fill_(value)


# --- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize('img_channels', [1, 3])
@pytest.mark.parametrize('resolution', [16, 32, 64, 128, 256])
def test_generator_and_discriminator_output_shapes(resolution, img_channels):
    G = make_generator(resolution, img_channels)
    D = make_discriminator(resolution, img_channels)
    z, c = latents(G, batch=2)
    img = G(z, c)
    assert img.shape == (2, img_channels, resolution, resolution)
    assert img.dtype == torch.float32
    assert G.num_ws == G.synthesis.num_ws == 2 * int(np.log2(resolution)) - 2
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (16, 0, 16, resolution,
                                                                              img_channels)
    assert D(img, c).shape == (2, 1)


def test_channels_follow_channel_base_over_resolution_capped_at_channel_max():
    G = make_generator(64, channel_base=1024, channel_max=32)
    assert G.synthesis.b4.const.shape[0] == 32          # min(1024 // 4, 32)
    assert G.synthesis.b32.conv1.weight.shape[0] == 32  # min(1024 // 32, 32)
    assert G.synthesis.b64.conv1.weight.shape[0] == 16  # min(1024 // 64, 32)
    D = make_discriminator(64)
    assert D.b64.conv0.weight.shape[0] == 16 and D.b64.conv1.weight.shape[0] == 32
    assert D.feature_dim == 32


def test_conditional_generator_and_discriminator_use_the_label():
    G = make_generator(16, c_dim=5)
    D = make_discriminator(16, c_dim=5)
    assert D.cmap_dim == D.feature_dim
    G.eval()
    z, c = latents(G, batch=4)
    img = G(z, c, noise_mode='const')
    other_label = c.roll(1, dims=1)
    assert not torch.allclose(img, G(z, other_label, noise_mode='const'))
    logits = D(img, c)
    assert logits.shape == (4, 1)
    assert not torch.allclose(logits, D(img, other_label))


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_every_architecture_builds_and_runs(architecture):
    G = make_generator(16, architecture=architecture)
    D = make_discriminator(16, architecture=architecture)
    z, c = latents(G, batch=2)
    img = G(z, c)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    assert D(img, c).shape == (2, 1)


def test_invalid_options_fail_with_a_clear_message():
    with pytest.raises(NetworkConfigError, match='power of two'):
        make_generator(48)
    with pytest.raises(NetworkConfigError, match='architecture'):
        make_discriminator(16, architecture='densenet')
    G = make_generator(16)
    z, c = latents(G)
    with pytest.raises(NetworkConfigError, match="noise_mode='fixed'"):
        G(z, c, noise_mode='fixed')


# --- equalised learning rate ------------------------------------------------------------------

def test_fully_connected_equalised_lr_init_statistics():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(512, 512, lr_multiplier=0.01, bias_init=1)
    raw_std = layer.weight.std().item()
    effective_std = (layer.weight * layer.weight_gain).std().item()
    assert raw_std == pytest.approx(1 / 0.01, rel=0.02)
    assert effective_std == pytest.approx(1 / np.sqrt(512), rel=0.02)
    assert torch.allclose(layer.bias * layer.bias_gain, torch.full([512], 0.01))
    out = layer(torch.randn(256, 512))  # unit-variance in -> unit-variance (+ bias 0.01) out
    assert out.var().item() == pytest.approx(1.0, rel=0.1)
    assert out.mean().item() == pytest.approx(0.01, abs=0.02)


def test_conv2d_equalised_lr_init_statistics():
    torch.manual_seed(0)
    layer = Conv2dLayer(64, 64, kernel_size=3)
    assert layer.weight.std().item() == pytest.approx(1.0, rel=0.03)
    effective_std = (layer.weight * layer.weight_gain).std().item()
    assert effective_std == pytest.approx(1 / np.sqrt(64 * 9), rel=0.03)
    lrelu = Conv2dLayer(64, 64, kernel_size=3, activation='lrelu')
    assert lrelu.act_gain == pytest.approx(np.sqrt(2))


# --- mapping network --------------------------------------------------------------------------

def make_mapping(**kwargs):
    torch.manual_seed(0)
    return MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=5, num_layers=3, **kwargs)


def test_truncation_psi_zero_gives_w_avg_and_psi_one_leaves_w_unchanged():
    mapping = make_mapping().eval()
    mapping.w_avg.copy_(torch.linspace(-1, 1, 8))
    z = torch.randn(6, 8)
    ws = mapping(z, None)
    assert ws.shape == (6, 5, 8)
    assert torch.equal(ws[:, 0], ws[:, 4])  # broadcast: one w per sample
    assert torch.equal(mapping(z, None, truncation_psi=0), mapping.w_avg.expand(6, 5, 8))
    assert torch.equal(mapping(z, None, truncation_psi=1), ws)
    half = mapping(z, None, truncation_psi=0.5)
    assert torch.allclose(half, (ws + mapping.w_avg) / 2, atol=1e-6)


def test_truncation_cutoff_truncates_only_the_first_ws():
    mapping = make_mapping().eval()
    mapping.w_avg.fill_(3.0)
    z = torch.randn(4, 8)
    ws = mapping(z, None)
    cut = mapping(z, None, truncation_psi=0, truncation_cutoff=2)
    assert torch.equal(cut[:, :2], torch.full([4, 2, 8], 3.0))
    assert torch.equal(cut[:, 2:], ws[:, 2:])


def test_w_avg_moves_towards_the_batch_mean_with_beta():
    mapping = make_mapping(w_avg_beta=0.9).train()
    old_avg = torch.full([8], 5.0)
    mapping.w_avg.copy_(old_avg)
    z = torch.randn(32, 8)
    ws = mapping(z, None)
    batch_mean = ws[:, 0].detach().mean(dim=0)
    assert torch.allclose(mapping.w_avg, batch_mean + 0.9 * (old_avg - batch_mean), atol=1e-5)
    frozen = mapping.w_avg.clone()
    mapping(z, None, skip_w_avg_update=True)
    mapping.eval()(z, None)
    assert torch.equal(mapping.w_avg, frozen)


def test_mapping_normalises_the_second_moment_of_z():
    mapping = make_mapping().eval()
    z = torch.randn(4, 8)
    assert torch.allclose(mapping(z, None), mapping(z * 37.0, None), atol=1e-5)


# --- modulation / demodulation ----------------------------------------------------------------

def modulated_output(demodulate, fused, style_scale=1.0):
    rng = torch.Generator().manual_seed(0)
    x = torch.randn([4, 64, 24, 24], generator=rng)
    weight = torch.randn([48, 64, 3, 3], generator=rng)
    styles = torch.randn([4, 64], generator=rng).exp() * style_scale
    return stylegan2.modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate,
                                      fused_modconv=fused)


@pytest.mark.parametrize('fused', [True, False])
def test_demodulated_conv_keeps_unit_variance(fused):
    out = modulated_output(demodulate=True, fused=fused, style_scale=7.0)
    interior = out[:, :, 1:-1, 1:-1]  # the zero padding shrinks the border
    per_channel_var = interior.var(dim=[2, 3])
    assert per_channel_var.mean().item() == pytest.approx(1.0, abs=0.05)
    assert per_channel_var.min().item() > 0.7 and per_channel_var.max().item() < 1.3
    raw = modulated_output(demodulate=False, fused=fused, style_scale=7.0)
    assert raw[:, :, 1:-1, 1:-1].var().item() > 100  # without demodulation the styles leak through


def test_modulated_conv_matches_a_per_sample_reference():
    rng = torch.Generator().manual_seed(3)
    x = torch.randn([3, 8, 6, 6], generator=rng)
    weight = torch.randn([5, 8, 3, 3], generator=rng)
    styles = torch.randn([3, 8], generator=rng)
    expected = []
    for sample in range(3):
        modulated = weight * styles[sample].reshape(1, -1, 1, 1)
        demodulated = modulated / modulated.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()
        expected.append(torch.nn.functional.conv2d(x[sample:sample + 1], demodulated, padding=1))
    expected = torch.cat(expected)
    for fused in [True, False]:
        out = stylegan2.modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused)
        assert torch.allclose(out, expected, atol=1e-5)


def test_fused_and_unfused_modulated_conv_agree():
    assert torch.allclose(modulated_output(True, True), modulated_output(True, False), atol=1e-4)
    assert torch.allclose(modulated_output(False, True), modulated_output(False, False), atol=1e-3)


def test_fused_and_unfused_generator_agree_including_upsampling():
    G = make_generator(32).eval()
    set_noise_strength(G, 0.3)
    z, c = latents(G)
    fused = G(z, c, noise_mode='const', fused_modconv=True)
    unfused = G(z, c, noise_mode='const', fused_modconv=False)
    assert torch.allclose(fused, unfused, atol=1e-4)


# --- noise ------------------------------------------------------------------------------------

def test_noise_modes():
    G = make_generator(16).eval()
    set_noise_strength(G, 0.5)
    z, c = latents(G)
    const_a = G(z, c, noise_mode='const')
    assert torch.equal(const_a, G(z, c, noise_mode='const'))
    random_a = G(z, c, noise_mode='random')
    assert not torch.allclose(random_a, G(z, c, noise_mode='random'))
    none = G(z, c, noise_mode='none')
    assert not torch.allclose(none, random_a) and not torch.allclose(none, const_a)
    set_noise_strength(G, 0.0)  # zero strength (the initial value) makes every mode identical
    assert torch.equal(G(z, c, noise_mode='none'), G(z, c, noise_mode='const'))


def test_each_layer_has_its_own_constant_noise_map():
    G = make_generator(16)
    assert G.synthesis.b16.conv0.noise_const.shape == (16, 16)
    assert not torch.equal(G.synthesis.b16.conv0.noise_const, G.synthesis.b16.conv1.noise_const)


# --- values and gradients ---------------------------------------------------------------------

def test_generator_output_is_finite_and_in_a_sane_range():
    G = make_generator(64)
    z, c = latents(G, batch=8)
    img = G(z, c)
    assert torch.isfinite(img).all()
    # At initialisation the image has roughly unit standard deviation (training then pulls it into
    # [-1, 1]); a wrong gain anywhere in the 11 layers would move it by orders of magnitude.
    assert 0.3 < img.std().item() < 3
    assert abs(img.mean().item()) < 0.5
    assert img.abs().max().item() < 20


def test_gradients_reach_every_generator_parameter():
    G = make_generator(32, c_dim=3).train()
    z, c = latents(G)
    G(z, c).square().mean().backward()
    for name, param in G.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('c_dim', [0, 4])
def test_discriminator_supports_double_backward_for_r1(c_dim):
    D = make_discriminator(32, c_dim=c_dim)
    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    c = torch.eye(4)[:, :c_dim] if c_dim else torch.zeros(4, 0)
    (grad,) = torch.autograd.grad(D(img, c).sum(), img, create_graph=True)
    grad.square().sum().backward()
    for name, param in D.named_parameters():
        # Leaky ReLU is piecewise linear, so biases behind the last non-linear op (minibatch std)
        # cannot change the input gradient; every weight can.
        if name.endswith('weight'):
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert param.grad is None or torch.isfinite(param.grad).all(), name


def test_discriminator_returns_penultimate_features_on_request():
    D = make_discriminator(16, c_dim=2)
    img = torch.randn(4, 3, 16, 16)
    c = torch.eye(2)[[0, 1, 0, 1]]
    logits, features = D(img, c, return_features=True)
    assert features.shape == (4, D.feature_dim)
    assert torch.equal(logits, D(img, c))
    cmap = D.mapping(None, c)
    expected = (D.b4.out(features) * cmap).sum(dim=1, keepdim=True) / np.sqrt(D.cmap_dim)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_minibatch_std_appends_the_group_standard_deviation():
    layer = MinibatchStdLayer(group_size=2)
    x = torch.zeros(4, 3, 2, 2)
    x[0], x[2] = 1.0, 3.0  # group members are samples (0, 2) and (1, 3): reshape is [G, n, ...]
    out = layer(x)
    assert out.shape == (4, 4, 2, 2)
    assert torch.allclose(out[[0, 2], 3], torch.ones(2, 2, 2), atol=1e-3)   # std of {1, 3}
    assert torch.allclose(out[[1, 3], 3], torch.zeros(2, 2, 2), atol=1e-3)  # std of {0, 0}
    assert MinibatchStdLayer(group_size=4)(torch.randn(6, 3, 2, 2)).shape == (6, 4, 2, 2)


# --- plug-in seam: mapping network replaced by name --------------------------------------------

class FixedStyleMapping(torch.nn.Module):
    """Stand-in for a plug-in mapping: every sample gets the same learned w."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, fill=0.5):
        super().__init__()
        self.num_ws = num_ws
        self.style = torch.nn.Parameter(torch.full([w_dim], float(fill)))
        self.calls = []

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        self.calls.append((truncation_psi, skip_w_avg_update))
        return self.style.expand(z.shape[0], self.num_ws, -1)


def test_mapping_class_can_be_replaced_by_name():
    torch.manual_seed(0)
    G = Generator(z_dim=4, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs={'class_name': f'{__name__}.FixedStyleMapping', 'fill': 0.25},
                  synthesis_kwargs=SMALL).eval()
    assert type(G.mapping).__name__ == 'FixedStyleMapping'
    assert torch.equal(G.mapping.style, torch.full([16], 0.25))
    z = torch.randn(3, 4)
    img = G(z, torch.zeros(3, 0), truncation_psi=0.7, noise_mode='const')
    assert G.mapping.calls == [(0.7, False)]
    expected = G.synthesis(torch.full([3, G.num_ws, 16], 0.25), noise_mode='const')
    assert torch.equal(img, expected)


# --- persistence ------------------------------------------------------------------------------

def test_pickle_round_trip_reproduces_outputs():
    G = make_generator(16, c_dim=2).eval()
    D = make_discriminator(16, c_dim=2).eval()
    set_noise_strength(G, 0.2)
    z, c = latents(G)
    assert persistence.is_persistent(G) and persistence.is_persistent(G.synthesis.b8.conv0)
    G2, D2 = pickle.loads(pickle.dumps((G, D)))
    img = G(z, c, truncation_psi=0.8, noise_mode='const')
    assert torch.equal(img, G2(z, c, truncation_psi=0.8, noise_mode='const'))
    assert torch.equal(D(img, c), D2(img, c))
    assert torch.equal(G.mapping.w_avg, G2.mapping.w_avg)
    G3 = copy.deepcopy(G)
    assert torch.equal(img, G3(z, c, truncation_psi=0.8, noise_mode='const'))


def test_module_imports_only_names_the_official_code_also_has():
    allowed = {'contextlib', 'numpy', 'torch', 'dnnlib.util', 'torch_utils', 'torch_utils.ops'}
    imported = set()
    with open(stylegan2.__file__) as file:
        for line in file:
            words = line.split()
            if words[:1] == ['import'] or (words[:1] == ['from'] and 'import' in words):
                imported.add(words[1])
    assert imported == allowed


# --- precision --------------------------------------------------------------------------------

def test_fp16_blocks_fall_back_to_fp32_on_cpu():
    G = make_generator(32, num_fp16_res=2, conv_clamp=256).eval()
    D = make_discriminator(32, num_fp16_res=2, conv_clamp=256)
    assert G.synthesis.b32.use_fp16 and not G.synthesis.b8.use_fp16
    z, c = latents(G)
    img = G(z, c, noise_mode='const')
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    assert torch.equal(img, G(z, c, noise_mode='const', force_fp32=True))
    assert torch.equal(D(img, c), D(img, c, force_fp32=True))


def relative_error(value, reference):
    return ((value - reference).norm() / reference.norm()).item()


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    G = make_generator(32, c_dim=2).eval()
    D = make_discriminator(32, c_dim=2)
    set_noise_strength(G, 0.1)
    z, c = latents(G)
    img = G(z, c, noise_mode='const')
    logits = D(img, c)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        img_bf16 = G(z, c, noise_mode='const')
        logits_bf16, features_bf16 = D(img, c, return_features=True)
        ws = G.mapping(z, c)
    assert img_bf16.dtype == torch.float32 and logits_bf16.dtype == torch.float32
    assert ws.dtype == torch.float32 and features_bf16.dtype == torch.float32
    assert torch.isfinite(img_bf16).all() and torch.isfinite(logits_bf16).all()
    assert relative_error(img_bf16, img) < 0.05
    assert relative_error(logits_bf16, logits) < 0.1
    assert not torch.equal(img_bf16, img)  # the convolutions really ran in bf16


def test_bf16_autocast_training_step_has_finite_gradients():
    G = make_generator(16).train()
    D = make_discriminator(16)
    z, c = latents(G)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        img = G(z, c)
        loss = torch.nn.functional.softplus(-D(img, c)).mean()
    loss.backward()
    assert G.mapping.w_avg.dtype == torch.float32
    for name, param in list(G.named_parameters()) + list(D.named_parameters()):
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
