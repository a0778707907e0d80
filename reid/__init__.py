"""crosscam's appearance side: ReID models, checkpoints, the batched Embedder, datasets in
Market-1501 layout, evaluation and training. Usable without any video; never imports ``pipeline``.
"""

from reid.errors import CrosscamError

__all__ = ["CrosscamError"]
