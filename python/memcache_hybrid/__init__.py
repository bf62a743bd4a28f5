"""MemCache Hybrid: a memory pool that inference engines share their KV cache through.

`DistributedObjectStore` puts objects under keys straight from the caller's buffers and
gets them straight into others; see `help(DistributedObjectStore)`. The client is
configured like the C and C++ clients: the TOML file named by `MMC_CLIENT_CONFIG`, then
`MMC_CLIENT_*` variables; with neither, it runs the embedded default in this process.
"""

from ._pymmc import (
    AUTO,
    G2H,
    G2L,
    H2G,
    L2G,
    DistributedObjectStore,
    KeyInfo,
    MetaService,
    MmcCopyDirect,
    ReplicateConfig,
    __version__ as _version,
)

__version__ = _version

__all__ = [
    "DistributedObjectStore",
    "ReplicateConfig",
    "KeyInfo",
    "MetaService",
    "MmcCopyDirect",
    "L2G",
    "G2L",
    "G2H",
    "H2G",
    "AUTO",
]
