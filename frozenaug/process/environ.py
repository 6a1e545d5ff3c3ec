"""Environment variables that libraries parse on first use, checked when a command starts.

OpenCV reads its size settings with ``std::stoull`` the first time it needs them: a bad
``OPENCV_FOR_THREADS_NUM`` surfaced as ``--policy light: cannot be applied (error: stoull)``,
and a bad ``OPENCV_IO_MAX_IMAGE_PIXELS`` aborts the process (an uncaught C++ exception, core
dumped) at the first decoded image. Both CLIs call ``check_environment`` before any work, so
the line names the variable instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from frozenaug.common.errors import InputError, brief

# OpenCV's size_t settings (utils::getConfigurationParameterSizeT): digits, optionally KB/MB/GB.
OPENCV_SIZES = (
    "OPENCV_FOR_THREADS_NUM", "OPENCV_IO_MAX_IMAGE_WIDTH", "OPENCV_IO_MAX_IMAGE_HEIGHT",
    "OPENCV_IO_MAX_IMAGE_PIXELS", "OPENCV_IO_MAX_IMAGE_PARAMS",
    "OPENCV_THREAD_POOL_ACTIVE_WAIT_PAUSE_LIMIT", "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER",
    "OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN", "OPENCV_THREAD_POOL_ACTIVE_WAIT_THREADS_LIMIT",
    "OPENCV_TRACE_DEPTH_OPENCV", "OPENCV_TRACE_MAX_CHILDREN", "OPENCV_TRACE_MAX_CHILDREN_OPENCV",
)
_SIZE = re.compile(r"[0-9]{1,19}(?:KB|MB|GB)?")


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a set OpenCV size variable that OpenCV would choke on.

    Raises:
        InputError: naming the variable, its value and the form OpenCV accepts.
    """
    env = os.environ if environ is None else environ
    for name in OPENCV_SIZES:
        value = env.get(name)
        if value is not None and not _SIZE.fullmatch(value):
            raise InputError(f"environment variable {name}={brief(value)}: OpenCV reads it as a "
                             "whole number (optionally ending in KB, MB or GB); set it to one, "
                             f"or unset it (unset {name})")
