"""Bars, the seven features, windows, synthetic data and CSV loading (numpy only, no torch)."""
