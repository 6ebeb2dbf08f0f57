"""Generator inputs drawn for the global batch, so N processes see the batches of one.

Each training step needs, per phase, `batch_size` latents and generator labels over all ranks.
Every rank draws all of them from one stream that is seeded identically on every rank (its own
torch.Generator and numpy RandomState, apart from the per-rank global RNGs that drive noise inputs
and augmentation) and keeps the rows `rank, rank + N, rank + 2N, ...`. The real images follow the
same stride: `misc.InfiniteSampler` gives rank r every N-th index of one shared index stream. So a
run on N processes trains on the same global batches as a run on one process with the same
`--batch`, and the minibatch-standard-deviation groups of D (which take every (B/G)-th sample of
a batch of B) hold the same samples as well when `batch_gpu` is the per-rank batch.

Drawing the global batch on every rank costs a sampler call of `batch_size` rows instead of
`batch_size / N`, negligible next to a training step. The stream's state travels in
`resume_state['sampling']`, so resume stays exact.
"""

import numpy as np
import torch

import dnnlib


class GlobalBatchSampling:
    def __init__(self, batch_size, num_gpus, rank, seed, device, state=None):
        self.batch_size = int(batch_size)
        self.num_gpus = int(num_gpus)
        self.rank = int(rank)
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self.label_rng = np.random.RandomState(int(seed))
        if state is not None:
            self.load_state_dict(state)

    def rows(self, tensor):
        """This rank's rows of a global-batch tensor."""
        return tensor[self.rank::self.num_gpus]

    def draw(self, latent_sampler, training_set, num_phases):
        """([per-phase EasyDict of this rank's latents], [this rank's labels, phase-major])."""
        latents = []
        for _ in range(num_phases):
            batch = latent_sampler.sample(self.batch_size, device=self.generator.device, generator=self.generator)
            latents.append(dnnlib.EasyDict({key: self.rows(value) for key, value in batch.items()}))
        labels = []
        for _ in range(num_phases):
            indices = self.label_rng.randint(len(training_set), size=self.batch_size)
            labels += [training_set.get_label(int(i)) for i in indices[self.rank::self.num_gpus]]
        return latents, labels

    def state_dict(self):
        return dict(generator=self.generator.get_state(), labels=self.label_rng.get_state())

    def load_state_dict(self, state):
        self.generator.set_state(state['generator'])
        self.label_rng.set_state(state['labels'])
