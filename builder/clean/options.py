"""The cleaning step's options, declared by the step that owns their defaults (the build's
config and the scan and clean commands take them from here): light, for the CLI's fast checks."""

from __future__ import annotations

from typing import Any

from frozenaug.builder.clean.split import DEFAULT_FRACTIONS, parse_fractions
from frozenaug.common.errors import InputError, brief
from frozenaug.common.options import Option

# 4 bits: measured on the blood-cell set (clean.scan, DEFAULT_THRESHOLD, says how).
THRESHOLD = Option("threshold", 4, "max Hamming distance between perceptual hashes of "
                   "near-duplicates", kind=int, lo=0, hi=63, none_ok=True)
OUTLIER_MIN = Option("outlier_min", 10, "a picture repeated at least this often is an "
                     "injected outlier", kind=int, lo=2, hi=2**31 - 1, none_ok=True)


def _fraction_option(v: Any) -> tuple[float, float, float]:
    if isinstance(v, (list, tuple)):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise InputError(f"must be three fractions, got {brief(v)}")
        v = ",".join(repr(float(x)) for x in v)
    if not isinstance(v, str):
        raise InputError(f"must be 'train,val,test' fractions, got {brief(v)}")
    return tuple(float(x) for x in parse_fractions(v))  # type: ignore[return-value]


SPLIT = Option("split", DEFAULT_FRACTIONS, "train,val,test fractions", parse=_fraction_option)
