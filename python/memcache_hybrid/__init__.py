"""MemCache Hybrid: a memory pool that inference engines share their KV cache through.

`DistributedObjectStore` puts objects under keys straight from the caller's buffers and
gets them straight into others; see `help(DistributedObjectStore)`.
"""

from ._pymmc import DistributedObjectStore  # noqa: F401
