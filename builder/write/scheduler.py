"""``--backend dask --scheduler ADDRESS``: a dask.distributed cluster runs the shard tasks
(joblib's dask backend). The scheduler is contacted before anything is read or written: if it
cannot be reached within ``SCHEDULER_TIMEOUT_S``, or has no worker, the build fails (exit 2) and
leaves nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from frozenaug.builder.config import BuildConfig
from frozenaug.common.errors import InputError

# Seconds to connect to a --scheduler, and again to wait for its first worker.
SCHEDULER_TIMEOUT_S = 10.0


def _probe(address: str, timeout: float) -> None:
    """Open one comm to the scheduler and hang up, on a private event loop in a thread.

    A ``Client`` whose constructor fails is left half-built, and closing it when it is garbage
    collected can hang or deadlock a later Client or LocalCluster in the same process; so an
    unreachable address is found here, before any Client exists.
    """
    from distributed.comm import connect

    async def hello() -> None:
        try:  # connect's own timeout does not cover the handshake: a silent port would hang
            comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout * 1.5)
        except asyncio.TimeoutError:  # noqa: UP041 (on Python 3.10 not the builtin)
            raise TimeoutError(f"no dask handshake from {address} in {timeout:g} s") from None
        except (OSError, ValueError):
            raise
        except Exception as e:  # something else answered (e.g. HTTP): its bytes parse as junk
            raise OSError(f"{address} does not answer as a dask scheduler "
                          f"({type(e).__name__})") from None
        await comm.close()

    with ThreadPoolExecutor(1) as ex:  # asyncio.run needs a thread without a running loop
        ex.submit(asyncio.run, hello()).result()


@contextlib.contextmanager
def connect_scheduler(cfg: BuildConfig) -> Iterator[Any]:
    """For ``--backend dask``, a ``dask.distributed.Client`` of ``cfg.scheduler`` with at least
    one worker; ``None`` for loky. The client is closed (never the cluster) on the way out.

    Raises:
        InputError: dask is not installed, the address is malformed, the scheduler does not
            answer within ``SCHEDULER_TIMEOUT_S``, or it has no worker.
    """
    if cfg.backend != "dask":
        yield None
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError(
            "--backend dask: needs dask.distributed (pip install 'frozenaug[dask]')"
        ) from None
    where = f"--scheduler {cfg.scheduler}"
    try:
        _probe(cfg.scheduler, SCHEDULER_TIMEOUT_S)
        client = Client(cfg.scheduler, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False)
    except (OSError, ValueError) as e:  # OSError includes TimeoutError
        raise InputError(f"{where}: cannot reach a dask scheduler there ({e})") from None
    try:
        try:
            client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):  # noqa: UP041 (on Python 3.10 not the builtin)
            raise InputError(
                f"{where}: the scheduler has no workers (waited {SCHEDULER_TIMEOUT_S:g} s)"
            ) from None
        yield client
    finally:
        client.close()
