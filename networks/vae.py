"""Encoders and decoders of the VAE family (stage 1 of ID-GAN), and FactorVAE's code discriminator.

The official 64x64 design of ID-GAN / beta-VAE: four 4x4 stride-2 convolutions with 32-32-64-64
channels (64 -> 4 pixels), a fully connected layer of 256, and a linear head with 2 * code_dim
outputs (mean and log-variance); the decoder mirrors it with transposed convolutions.

Other resolutions (our choice): one stride-2 convolution per octave, so the trunk always ends in
64 channels at 4x4 and the fully connected part is identical at every resolution. Extra octaves
above 64x64 get 32 channels (cheap at the large feature maps), a 32x32 input drops the first conv:

    32x32: 32-64-64    64x64: 32-32-64-64    128x128: 32-32-32-64-64    256x256: 32-32-32-32-64-64

Contract (docs/ARCHITECTURE.md): `E(x) -> (mu, logvar)` for x in [-1, 1], NCHW at
`E.img_resolution` x `E.img_resolution` with `E.img_channels` channels; both outputs [N, E.code_dim].
The decoder returns per-pixel logits; `Dec.to_image(logits)` gives the mean image in [-1, 1]
(sigmoid of the logits, for the Bernoulli and for the fixed-variance Gaussian decoder alike; see
training/vae_objectives/base.py for the two likelihoods).

bf16 autocast: the convolutions run in bf16, the layers next to the code (the encoder head that
produces mu/logvar and the decoder's first layer) are forced to fp32 because logvar goes through
exp() and the KL, where bf16's 8 significant bits would show; they are tiny anyway.

Every class is persistent, so a VAE snapshot loads without this file.
"""

import torch

from torch_utils import misc, persistence

MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024
TRUNK_RESOLUTION = 4          # the conv trunk stops at 4x4
HIDDEN_FEATURES = 256


class VAEConfigError(ValueError):
    """An invalid network option; the message names it and the valid values."""


def conv_channels(img_resolution):
    """Output channels of the stride-2 convolutions of the encoder, from the input resolution down."""
    res = int(img_resolution)
    if res < MIN_RESOLUTION or res > MAX_RESOLUTION or res & (res - 1) != 0:
        raise VAEConfigError(f'VAE resolution {img_resolution} is not supported; use a power of two between '
                             f'{MIN_RESOLUTION} and {MAX_RESOLUTION} (e.g. dataset_tool.py --resolution=64).')
    num_convs = res.bit_length() - 1 - (TRUNK_RESOLUTION.bit_length() - 1)
    return [32] * (num_convs - 2) + [64, 64]


def _float32_linear(layer, x):
    """Run a Linear in fp32 even inside an autocast region (see the module docstring)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return layer(x.float())


@persistence.persistent_class
class Encoder(torch.nn.Module):
    """q(code | x): conv trunk -> fc 256 -> (mu, logvar)."""

    def __init__(self, img_resolution=64, img_channels=1, code_dim=10):
        super().__init__()
        if int(img_channels) < 1:
            raise VAEConfigError(f'img_channels must be at least 1, got {img_channels}.')
        if int(code_dim) < 1:
            raise VAEConfigError(f'code_dim must be at least 1, got {code_dim}.')
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.code_dim = int(code_dim)
        channels = conv_channels(self.img_resolution)
        layers = []
        in_channels = self.img_channels
        for out_channels in channels:
            layers += [torch.nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
                       torch.nn.ReLU()]
            in_channels = out_channels
        self.trunk = torch.nn.Sequential(*layers)
        self.trunk_channels = in_channels
        self.fc = torch.nn.Linear(in_channels * TRUNK_RESOLUTION ** 2, HIDDEN_FEATURES)
        self.head = torch.nn.Linear(HIDDEN_FEATURES, 2 * self.code_dim)

    def forward(self, x):
        misc.assert_shape(x, [None, self.img_channels, self.img_resolution, self.img_resolution])
        h = self.trunk(x)
        misc.assert_shape(h, [None, self.trunk_channels, TRUNK_RESOLUTION, TRUNK_RESOLUTION])
        h = torch.relu(self.fc(h.flatten(1)))
        out = _float32_linear(self.head, h)
        mu, logvar = out[:, :self.code_dim], out[:, self.code_dim:]
        return mu, logvar


@persistence.persistent_class
class Decoder(torch.nn.Module):
    """p(x | code): code -> fc 256 -> fc 64*4*4 -> transposed convs mirroring the encoder -> logits."""

    def __init__(self, img_resolution=64, img_channels=1, code_dim=10):
        super().__init__()
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.code_dim = int(code_dim)
        channels = conv_channels(self.img_resolution)
        self.trunk_channels = channels[-1]
        self.fc_in = torch.nn.Linear(self.code_dim, HIDDEN_FEATURES)
        self.fc = torch.nn.Linear(HIDDEN_FEATURES, self.trunk_channels * TRUNK_RESOLUTION ** 2)
        outs = list(reversed(channels[:-1])) + [self.img_channels]
        layers = []
        in_channels = self.trunk_channels
        for index, out_channels in enumerate(outs):
            layers.append(torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1))
            if index < len(outs) - 1:
                layers.append(torch.nn.ReLU())
            in_channels = out_channels
        self.trunk = torch.nn.Sequential(*layers)

    def forward(self, code):
        misc.assert_shape(code, [None, self.code_dim])
        h = torch.relu(_float32_linear(self.fc_in, code))
        h = torch.relu(self.fc(h)).reshape(-1, self.trunk_channels, TRUNK_RESOLUTION, TRUNK_RESOLUTION)
        logits = self.trunk(h)
        misc.assert_shape(logits, [None, self.img_channels, self.img_resolution, self.img_resolution])
        return logits

    @staticmethod
    def to_image(logits):
        """The decoder's mean image in [-1, 1] (fp32)."""
        return torch.sigmoid(logits.float()) * 2 - 1


@persistence.persistent_class
class CodeDiscriminator(torch.nn.Module):
    """FactorVAE's total-correlation discriminator: logits [N, 2] for (joint q(z), product of marginals).

    Kim & Mnih use 6 hidden layers of 1000 units with leaky ReLU(0.2); `hidden` and `layers` make
    it smaller for CPU runs (the FactorVAE config uses 6 x 1000 unless overridden).
    """

    def __init__(self, code_dim=10, hidden=1000, layers=6):
        super().__init__()
        self.code_dim = int(code_dim)
        blocks = []
        in_features = self.code_dim
        for _ in range(int(layers)):
            blocks += [torch.nn.Linear(in_features, int(hidden)), torch.nn.LeakyReLU(0.2)]
            in_features = int(hidden)
        blocks.append(torch.nn.Linear(in_features, 2))
        self.net = torch.nn.Sequential(*blocks)

    def forward(self, code):
        misc.assert_shape(code, [None, self.code_dim])
        return self.net(code)
