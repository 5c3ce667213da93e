"""Feast repository of tradecast: feature_store.yaml and the declarations in definitions.py."""
