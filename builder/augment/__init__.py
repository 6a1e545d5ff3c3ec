"""Augmentation: albumentations policies, our own ops (RandAugment, AugMix), distortion families."""
