"""Person re-identification datasets on disk."""

from reid.data.market import MarketDataset, MarketImage

__all__ = ["MarketDataset", "MarketImage"]
