"""Type stubs of the compiled extension, with its own docstrings (tests/test_stubs.py keeps them equal)."""

from enum import IntEnum
from typing import List, Sequence, Union

from typing_extensions import Buffer

# Addresses or sizes: ints, or an array of 64-bit integers (numpy uint64 / int64).
Ints = Union[Sequence[int], Buffer]
IntRows = Union[Sequence[Ints], Buffer]

__version__: str

class MmcCopyDirect(IntEnum):
    """Where a copy goes: host (`H`), device-local (`L`) or global pool (`G`) memory."""

    SMEMB_COPY_L2G = 0
    SMEMB_COPY_G2L = 1
    SMEMB_COPY_G2H = 2
    SMEMB_COPY_H2G = 3

class ReplicateConfig:
    """Configuration for replica allocation policy."""

    replicaNum: int
    """Replicas per object: 1 unless set, at most 8 (0 reads as 1)."""
    preferredLocalServiceIDs: List[int]
    """Local services that must hold replicas; unique, at most `replicaNum`."""
    def __init__(self) -> None: ...

class KeyInfo:
    """Where an object lives: its size, and one location and medium per replica."""

    def size(self) -> int:
        """The object's size in bytes."""
    def loc_list(self) -> List[int]:
        """The local service of each replica."""
    def type_list(self) -> List[int]:
        """The medium of each replica (0 DRAM, 1 HBM, 2 SSD)."""

class MetaService:
    """The meta service, in this process."""
    @staticmethod
    def main() -> int:
        """Start the meta service process directly. This is a blocking call: it serves until
        SIGINT or SIGTERM, then returns 0 (or an error code if it could not start).
        Configured like `mmc meta`: the TOML file named by `MMC_META_CONFIG`, then
        `MMC_META_*` variables (`MMC_META_DISCOVERY_URL=tcp://127.0.0.1:5000`).
        """

class DistributedObjectStore:
    """A client of the pool: `init`, then the data calls, then `close`. Configured like the
    C and C++ clients: the TOML file named by `MMC_CLIENT_CONFIG`, then `MMC_CLIENT_*`
    variables, else the embedded default.

    Every call returns 0 or a negative error code (batch calls: one per key), except
    `get` (bytes), `is_exist` (1, 0 or a negative code) and the key-info calls. Pointer
    arguments are integer addresses, e.g. `array.ctypes.data` or `tensor.data_ptr()`;
    the GIL is released while bytes move. A list of addresses or sizes may also be a
    numpy array of 64-bit integers (2-D, one row per key, for the batched layer calls),
    which is read in one copy instead of one Python int at a time.
    """

    def __init__(self) -> None: ...
    def init(self, device_id: int, init_bm: bool = True) -> int:
        """Joins the pool and, with `init_bm`, contributes this host's DRAM to it
        (`local.dram_size` bytes). With `init_bm=False`, or a DRAM size of 0, it is a pure
        client: it adds no memory and puts and gets through the pool's.

        `device_id`: the accelerator whose device memory a device tier would use (a host-only
        pool ignores it). The pool is the one `MMC_CLIENT_CONFIG` / `MMC_CLIENT_*` name, else
        the embedded default in this process. Returns 0, -3005 when called twice, or another
        negative error code.
        """
    def close(self) -> int:
        """Leaves the pool and stops what `init` started; 0 or a negative error code. A
        client that is not initialized returns 0.
        """
    def get_local_service_id(self) -> int:
        """Get local serviceId: the id of the local service `init` started, or a negative
        error code (-3019 before `init`, -3018 on a pure client).
        """
    def put(self, key: str, buf: object, replicateConfig: ReplicateConfig = ...) -> int:
        """Stores `buf` under `key`: any C-contiguous object with the buffer protocol (bytes,
        bytearray, memoryview, numpy array), copied once into the pool.

        Returns 0, -3006 when the key exists, -3000 for bad input (a key of 256 bytes or more,
        an empty or non-contiguous buffer), or another negative error code.
        """
    def get(self, key: str) -> bytes:
        """The value under `key` as bytes, or `b""` when it is missing or the call fails."""
    def put_from(
        self,
        key: str,
        buffer_ptr: int,
        size: int,
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> int:
        """Put object data directly from a pre-allocated buffer: `size` bytes at the
        integer address `buffer_ptr` (`array.ctypes.data`, `tensor.data_ptr()`), copied
        straight into the pool.

        `direct`: `SMEMB_COPY_H2G` (host memory, the default); device directions answer -3000
        until a device tier exists. Returns 0, -3006 when the key exists, -3000 for a null
        address or size 0, or another negative error code.
        """
    def get_into(
        self, key: str, buffer_ptr: int, size: int, direct: int = MmcCopyDirect.SMEMB_COPY_G2H
    ) -> int:
        """Get object data directly into a pre-allocated buffer: the object under `key`
        is copied straight into `size` bytes at `buffer_ptr`, which must hold all of it.

        `direct`: `SMEMB_COPY_G2H` (the default). Returns 0, -3007 when the key is missing,
        -3000 for a null address or a buffer smaller than the object, or another negative code.
        """
    def put_from_layers(
        self,
        key: str,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> int:
        """Stores one object made of layers (one KV block's per-layer buffers): the
        `sizes[i]` bytes at each `buffer_ptrs[i]`, in order, gathered straight into the pool.

        Returns 0, -3000 when the lists differ in length or hold a null address or size 0,
        -3006 when the key exists, or another negative error code.
        """
    def get_into_layers(
        self,
        key: str,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: int = MmcCopyDirect.SMEMB_COPY_G2H,
    ) -> int:
        """Scatters the object under `key` over layers, in order: `sizes[i]` bytes at each
        `buffer_ptrs[i]` (normally the layout it was put with), straight from the pool.

        Returns 0, -3007 when the key is missing, -3000 when the lists differ in length, the
        layers overlap or hold less than the object, or another negative error code.
        """
    def batch_put_from(
        self,
        keys: List[str],
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> List[int]:
        """Put object data directly from pre-allocated buffers for multiple keys: key `i`
        gets `sizes[i]` bytes at `buffer_ptrs[i]`. All copies are in flight at once.

        Returns one code per key as `put_from` does; lists of different lengths give -3000
        for every key.
        """
    def batch_get_into(
        self,
        keys: List[str],
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: int = MmcCopyDirect.SMEMB_COPY_G2H,
    ) -> List[int]:
        """Get object data directly into pre-allocated buffers for multiple keys: key `i`
        into `sizes[i]` bytes at `buffer_ptrs[i]`. All copies are in flight at once.

        Returns one code per key as `get_into` does; lists of different lengths give -3000
        for every key.
        """
    def batch_put_from_layers(
        self,
        keys: List[str],
        buffer_ptrs: IntRows,
        sizes: IntRows,
        direct: int = MmcCopyDirect.SMEMB_COPY_H2G,
        replicateConfig: ReplicateConfig = ...,
    ) -> List[int]:
        """Stores one layered object per key: key `i` from the layers
        `buffer_ptrs[i][j]` / `sizes[i][j]`, as `put_from_layers` does, with every copy in
        flight at once.

        Returns one code per key: lists of different lengths give -3000 for every key; a
        key whose own layers are bad gets -3000 and the others go on.
        """
    def batch_get_into_layers(
        self,
        keys: List[str],
        buffer_ptrs: IntRows,
        sizes: IntRows,
        direct: int = MmcCopyDirect.SMEMB_COPY_G2H,
    ) -> List[int]:
        """Gets one layered object per key: key `i` scattered over the layers
        `buffer_ptrs[i][j]` / `sizes[i][j]`, as `get_into_layers` does, with every copy in flight
        at once.

        Returns one code per key: lists of different lengths give -3000 for every key; a
        key whose own layers are bad gets -3000 and the others go on.
        """
    def remove(self, key: str) -> int:
        """Removes the object under `key`; 0, -3007 when it is missing, or another negative
        error code.
        """
    def remove_batch(self, keys: List[str]) -> List[int]:
        """Removes the objects under `keys`; one code per key, as `remove` gives."""
    def is_exist(self, key: str) -> int:
        """1 if the object exists, 0 if not, a negative error code on failure."""
    def batch_is_exist(self, keys: List[str]) -> List[int]:
        """Check if multiple objects exist. Returns list of results: 1 if exists, 0 if not
        exists, a negative error code on failure.
        """
    def get_key_info(self, key: str) -> KeyInfo:
        """Where the object under `key` lives: a `KeyInfo` with its size and the local
        service and medium of each replica (size 0 and no replicas when it is missing).
        """
    def batch_get_key_info(self, keys: List[str]) -> List[KeyInfo]:
        """One `KeyInfo` per key, as `get_key_info` gives."""
    def register_buffer(self, buffer_ptr: int, size: int) -> int:
        """Register a memory buffer for direct access operations: `size` bytes at
        `buffer_ptr` that later pointer calls will use. Optional on host memory (every call
        works without it). Returns 0, -3005 when the region is registered already, or
        -3000 for a null address, size 0, or an overlap with another registered region.
        """
    def unregister_buffer(self, buffer_ptr: int, size: int) -> int:
        """Forgets a buffer `register_buffer` registered; 0, or -3000 when no region of that
        address and size is registered.
        """
