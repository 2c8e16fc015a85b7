"""A sharded sync on a Dask cluster: N workers, one shared S3 cache, no coordinator.

Each task runs ``dsm`` in its worker process for one share (``shard="K/N"``) of the universe's
(symbol, month) units; the cache on S3 is the only thing they share. A rerun (or a task Dask
retries on another worker) downloads only what is missing.

Run it against a real cluster (``Client("tcp://scheduler:8786")``) or locally::

    python sharded_sync.py s3://my-bucket/dsm um 1h '*USDT' 2023-01-01 2024-01-01 8

with the S3 credentials in the standard ``AWS_*`` variables on every worker.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional


def sync_shard(shard: str, cache_url: str, market: str, interval: Optional[str], symbols: str,
               start: str, end: str, manager_args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One worker's share: a sync into the shared cache; returns its report."""
    import dsm  # imported on the worker

    with dsm.Manager(cache_url=cache_url, **(manager_args or {})) as m:
        return m.sync(symbols, start, end, market=market, interval=interval, shard=shard,
                      allow_partial=True)


def sharded_sync(client: Any, shards: int, cache_url: str, market: str, interval: Optional[str],
                 symbols: str, start: str, end: str,
                 manager_args: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Runs ``shards`` shares on ``client``'s cluster and returns their reports. This file is
    uploaded to the workers first, so they can import :func:`sync_shard` (they need ``dsm``
    installed and the ``AWS_*`` variables set)."""
    client.upload_file(__file__)
    futures = [
        client.submit(sync_shard, f"{k}/{shards}", cache_url, market, interval, symbols, start, end,
                      manager_args, pure=False)
        for k in range(1, shards + 1)
    ]
    return client.gather(futures)


if __name__ == "__main__":
    from dask.distributed import Client, LocalCluster

    cache_url, market, interval, symbols, start, end, n = sys.argv[1:8]
    with LocalCluster(n_workers=int(n), threads_per_worker=1) as cluster, Client(cluster) as client:
        for report in sharded_sync(client, int(n), cache_url, market, interval, symbols, start, end):
            print(report["shard"], report["total"]["files"], "files,", report["total"]["incomplete"] or "complete")
