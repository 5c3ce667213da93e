"""tradecast: forecasting and risk scoring for cross-border e-commerce."""

__version__ = "0.1.0"
