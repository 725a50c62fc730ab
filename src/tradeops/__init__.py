"""tradeops: monitoring and operations for the trading stack."""

__version__ = "0.1.0"
