"""PK identity sampling: every batch holds P identities with K images each.

The triplet loss with hard mining needs positives and negatives inside each batch; fast-reid's
``NaiveIdentitySampler`` does this. Identities are visited in a shuffled order (reshuffled when
all have been used); an identity with fewer than K images is sampled with replacement, so it
still contributes exactly K. Batches of an epoch depend only on ``(seed, epoch)``, so a resumed
run draws the same batches as an uninterrupted one.

>>> sampler = PKSampler([0, 0, 1, 1, 1, 2], ids_per_batch=2, instances=2, seed=0)
>>> batch = sampler.epoch_batches(epoch=0, num_batches=1)[0]
>>> batch.shape
(4,)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from reid.errors import CrosscamError


class PKSampler:
    """Index batches of ``ids_per_batch`` (P) identities x ``instances`` (K) images.

    ``labels``: (N,) integer identity of each training image. Each batch is an (P*K,) int64 array
    of image indices, grouped by identity (K consecutive indices share a label).
    """

    def __init__(self, labels: Sequence[int], ids_per_batch: int, instances: int, seed: int = 0):
        labels = np.asarray(labels, dtype=np.int64)
        identities, inverse = np.unique(labels, return_inverse=True)
        if len(identities) < ids_per_batch:
            raise CrosscamError(
                f"sampler.ids_per_batch {ids_per_batch}: the training set has only {len(identities)} "
                f"identit{'y' if len(identities) == 1 else 'ies'}; "
                "lower sampler.ids_per_batch"
            )
        self.ids_per_batch = ids_per_batch
        self.instances = instances
        self.seed = seed
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(identities) + 1))
        self.images_of = [order[bounds[i] : bounds[i + 1]] for i in range(len(identities))]

    @property
    def batch_size(self) -> int:
        return self.ids_per_batch * self.instances

    def epoch_batches(self, epoch: int, num_batches: int) -> list[np.ndarray]:
        """The ``num_batches`` index batches of ``epoch``, reproducible from ``(seed, epoch)``."""
        rng = np.random.default_rng([self.seed, epoch])
        queue: list[int] = []
        batches = []
        for _ in range(num_batches):
            if len(queue) < self.ids_per_batch:
                # Leftovers, then a fresh permutation of the others: no identity twice in a batch.
                queue.extend(i for i in rng.permutation(len(self.images_of)).tolist() if i not in queue)
            chosen, queue = queue[: self.ids_per_batch], queue[self.ids_per_batch :]
            batches.append(np.concatenate([self._draw(rng, identity) for identity in chosen]))
        return batches

    def _draw(self, rng: np.random.Generator, identity: int) -> np.ndarray:
        images = self.images_of[identity]
        replace = len(images) < self.instances
        return rng.choice(images, size=self.instances, replace=replace).astype(np.int64)
