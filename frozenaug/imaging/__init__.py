"""Image operations both sides apply: stain colour models and the MixUp/CutMix batch stage."""
