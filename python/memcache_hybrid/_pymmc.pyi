"""Type stubs of the compiled extension (see the docstrings in the module itself)."""

from enum import IntEnum
from typing import List

class MmcCopyDirect(IntEnum):
    """Where a copy goes: host (H), device-local (L) or global pool (G) memory."""

    SMEMB_COPY_L2G = 0
    SMEMB_COPY_G2L = 1
    SMEMB_COPY_G2H = 2
    SMEMB_COPY_H2G = 3

class ReplicateConfig:
    """Configuration for replica allocation policy."""

    replicaNum: int
    """Replicas per object, at most 8 (0 reads as 1)."""
    preferredLocalServiceIDs: List[int]
    """Local services that must hold replicas; unique, at most `replicaNum`."""
    def __init__(self) -> None: ...

class KeyInfo:
    """Where an object lives: its size, and one location and medium per replica."""

    def size(self) -> int: ...
    def loc_list(self) -> List[int]:
        """The local service of each replica."""
    def type_list(self) -> List[int]:
        """The medium of each replica (0 DRAM, 1 HBM, 2 SSD)."""

class MetaService:
    @staticmethod
    def main() -> int:
        """Start the meta service in this process; blocks until SIGINT or SIGTERM."""

class DistributedObjectStore:
    """A client of the pool: `init`, then the data calls, then `close`.

    Every call returns 0 or a negative error code (batch calls: one per key), except
    `get` (bytes, `b""` on a miss or an error), `is_exist` (1, 0 or a negative code)
    and the key-info calls. Pointer arguments are integer addresses, e.g.
    `array.ctypes.data` or `tensor.data_ptr()`; the GIL is released while bytes move.
    """

    def __init__(self) -> None: ...
    def init(self, device_id: int) -> int: ...
    def close(self) -> int: ...
    def get_local_service_id(self) -> int: ...
    def put(self, key: str, buf: object, replicateConfig: ReplicateConfig = ...) -> int:
        """Stores any C-contiguous object with the buffer protocol under `key`."""
    def get(self, key: str) -> bytes: ...
    def put_from(
        self,
        key: str,
        buffer_ptr: int,
        size: int,
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> int: ...
    def get_into(
        self, key: str, buffer_ptr: int, size: int, direct: int = MmcCopyDirect.SMEMB_COPY_G2H
    ) -> int: ...
    def put_from_layers(
        self,
        key: str,
        buffer_ptrs: List[int],
        sizes: List[int],
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> int: ...
    def get_into_layers(
        self,
        key: str,
        buffer_ptrs: List[int],
        sizes: List[int],
        direct: int = MmcCopyDirect.SMEMB_COPY_G2H,
    ) -> int: ...
    def batch_put_from(
        self,
        keys: List[str],
        buffer_ptrs: List[int],
        sizes: List[int],
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> List[int]: ...
    def batch_get_into(
        self,
        keys: List[str],
        buffer_ptrs: List[int],
        sizes: List[int],
        direct: int = MmcCopyDirect.SMEMB_COPY_G2H,
    ) -> List[int]: ...
    def batch_put_from_layers(
        self,
        keys: List[str],
        buffer_ptrs: List[List[int]],
        sizes: List[List[int]],
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> List[int]: ...
    def batch_get_into_layers(
        self,
        keys: List[str],
        buffer_ptrs: List[List[int]],
        sizes: List[List[int]],
        direct: int = MmcCopyDirect.SMEMB_COPY_G2H,
    ) -> List[int]: ...
    def remove(self, key: str) -> int: ...
    def remove_batch(self, keys: List[str]) -> List[int]: ...
    def is_exist(self, key: str) -> int: ...
    def batch_is_exist(self, keys: List[str]) -> List[int]: ...
    def get_key_info(self, key: str) -> KeyInfo: ...
    def batch_get_key_info(self, keys: List[str]) -> List[KeyInfo]: ...
    def register_buffer(self, buffer_ptr: int, size: int) -> int: ...
    def unregister_buffer(self, buffer_ptr: int, size: int) -> int: ...
