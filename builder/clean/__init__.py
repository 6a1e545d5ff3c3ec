"""Cleaning: perceptual hashes, outlier clusters and duplicates, the leakage-free split."""
