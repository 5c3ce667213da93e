"""Drift and performance monitoring of the served models (Evidently), alerts and the gated retrain loop."""
