"""Prediction over many images: list them, score them in batches, write one row per image (and heatmaps)."""
