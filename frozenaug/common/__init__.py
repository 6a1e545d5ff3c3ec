"""Pieces both sides share: errors, options, atomic writes, ownership, locks, disk, seeds."""
