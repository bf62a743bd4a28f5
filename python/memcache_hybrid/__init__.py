"""MemCache Hybrid: a memory pool that inference engines share their KV cache through.

`DistributedObjectStore` puts objects under keys straight from the caller's buffers and
gets them straight into others; see `help(DistributedObjectStore)`. The client is
configured like the C and C++ clients: the TOML file named by `MMC_CLIENT_CONFIG`, then
`MMC_CLIENT_*` variables; with neither, it runs the embedded default in this process.
1.3.0's configuration works too: `DistributedObjectStore.setup(LocalConfig())`,
`MetaService.setup(MetaConfig())`, and the files named by `MMC_LOCAL_CONFIG_PATH` and
`MMC_META_CONFIG_PATH`.
"""

from ._pymmc import (
    AUTO,
    G2H,
    G2L,
    H2G,
    L2G,
    DistributedObjectStore,
    KeyInfo,
    LocalConfig,
    MetaConfig,
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
    "LocalConfig",
    "MetaConfig",
]
