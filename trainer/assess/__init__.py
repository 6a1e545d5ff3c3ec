"""Assessing a run: evaluate (with distortions and TTA) and predict."""
