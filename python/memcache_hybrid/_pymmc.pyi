"""Type stubs of the compiled extension, with its own docstrings (tests/test_stubs.py keeps
them equal; python/stubgen.py writes this file)."""

from enum import IntEnum
from typing import List, Sequence, Union

from typing_extensions import Buffer

# Addresses or sizes: ints, or an array of 64-bit integers (numpy uint64 / int64).
Ints = Union[Sequence[int], Buffer]
IntRows = Union[Sequence[Ints], Buffer]

__version__: str

L2G: int
G2L: int
G2H: int
H2G: int
AUTO: int

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
    def setup(self, config: LocalConfig) -> int:
        """Setup local configuration

        The following `init` uses `config` (1.3.0's `LocalConfig`) instead of the
        environment. Returns 0, or -3000 for a value this pool cannot honour (a protocol
        other than host_shm or host_tcp, TLS without certificates, …; the reason goes to
        standard error). An HBM size above 0 is device memory `init` contributes; `init`
        answers -3000 without a device runtime or in the embedded pool.
        """
    def init(self, device_id: int, init_bm: bool = True) -> int:
        """Joins the pool and, with `init_bm`, contributes this host's DRAM to it
        (`local.dram_size` bytes). With `init_bm=False`, or a DRAM size of 0, it is a pure
        client: it adds no memory and puts and gets through the pool's.

        `device_id`: the accelerator whose device memory a device tier would use (a host-only
        pool ignores it). The pool is the one `setup` names, else the one `MMC_CLIENT_CONFIG`
        (or 1.3.0's `MMC_LOCAL_CONFIG_PATH`) / `MMC_CLIENT_*` name, else the embedded default
        in this process. Returns 0, -3005 when called twice, or another negative error code.
        """
    def close(self) -> int:
        """Leaves the pool and stops what `init` started; 0 or a negative error code. A
        client that is not initialized returns 0.
        """
    def get_local_service_id(self) -> int:
        """Get local serviceId: the id of the local service `init` started, or a negative
        error code (-3019 before `init`, -3018 on a pure client).
        """
    def put(self, key: str, buf: Buffer, replicateConfig: ReplicateConfig = ...) -> int:
        """Stores `buf` under `key`: any C-contiguous object with the buffer protocol (bytes,
        bytearray, memoryview, numpy array), copied once into the pool.

        Returns 0 (also when the key exists: the first value stays, as in 1.3.0), -3000 for
        bad input (a key of 256 bytes or more, an empty or non-contiguous buffer), or another
        negative error code.
        """
    def get(self, arg0: str) -> bytes:
        """The value under the key `arg0` as bytes, or `b""` when it is missing or the call
        fails.
        """
    def put_from(
        self,
        key: str,
        buffer_ptr: int,
        size: int,
        direct: int = 3,
        replicateConfig: ReplicateConfig = ...,
    ) -> int:
        """Put object data directly from a pre-allocated buffer: `size` bytes at the
        integer address `buffer_ptr` (`array.ctypes.data`, `tensor.data_ptr()`), copied
        straight into the pool.

        `direct`: `SMEMB_COPY_H2G` (host memory, the default), `SMEMB_COPY_L2G` (device
        memory, in a build with a device runtime; -3000 and the reason without one) or
        `AUTO` (the device runtime tells which). Returns 0 (also when the key exists: the first value
        stays), -3000 for a null address or size 0, or another negative error code.
        """
    def get_into(self, key: str, buffer_ptr: int, size: int, direct: int = 2) -> int:
        """Get object data directly into a pre-allocated buffer: the object under `key`
        is copied straight into `size` bytes at `buffer_ptr`, which must hold all of it.

        `direct`: `SMEMB_COPY_G2H` (the default), `SMEMB_COPY_G2L` (device memory) or
        `AUTO`, as for `put_from`. Returns 0, -3007 when the key is missing,
        -3000 for a null address or a buffer smaller than the object, or another negative code.
        """
    def put_from_layers(
        self,
        key: str,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: int = 3,
        replicateConfig: ReplicateConfig = ...,
    ) -> int:
        """Stores one object made of layers (one KV block's per-layer buffers): the
        `sizes[i]` bytes at each `buffer_ptrs[i]`, in order, gathered straight into the pool.

        Returns 0 (also when the key exists: the first value stays), -3000 when the lists
        differ in length or hold a null address or size 0, or another negative error code.
        """
    def get_into_layers(self, key: str, buffer_ptrs: Ints, sizes: Ints, direct: int = 2) -> int:
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
        direct: int = 3,
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
        direct: int = 2,
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
        direct: int = 3,
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
        direct: int = 2,
    ) -> List[int]:
        """Gets one layered object per key: key `i` scattered over the layers
        `buffer_ptrs[i][j]` / `sizes[i][j]`, as `get_into_layers` does, with every copy in flight
        at once.

        Returns one code per key: lists of different lengths give -3000 for every key; a
        key whose own layers are bad gets -3000 and the others go on.
        """
    def remove(self, arg0: str) -> int:
        """Removes the object under the key `arg0`; 0, -3007 when it is missing, -3104 while a
        reader holds it, or another negative error code.
        """
    def remove_batch(self, arg0: List[str]) -> List[int]:
        """Removes the objects under the keys `arg0`; one code per key, as `remove` gives."""
    def remove_all(self) -> int:
        """Removes every object of the pool that no reader holds and no writer is still
        writing; 0 or a negative error code.
        """
    def is_exist(self, arg0: str) -> int:
        """1 if the object under the key `arg0` exists, 0 if not, a negative error code on
        failure.
        """
    def batch_is_exist(self, keys: List[str]) -> List[int]:
        """Check if multiple objects exist. Returns list of results: 1 if exists, 0 if not
        exists, -1 if error (here: the error's negative code).
        """
    def get_key_info(self, key: str, flag: int = 1) -> KeyInfo:
        """Where the object under `key` lives: a `KeyInfo` with its size and the local
        service, medium and pool address of each replica (size 0 and no replicas when it
        is missing). `flag` is accepted for 1.3.0's callers; every value answers the same.
        """
    def batch_get_key_info(self, keys: List[str], flag: int = 1) -> List[KeyInfo]:
        """One `KeyInfo` per key, as `get_key_info` gives."""
    def put_batch(
        self,
        keys: List[str],
        values: List[Buffer],
        replicateConfig: ReplicateConfig = ...,
    ) -> int:
        """Stores each of `values` (objects with the buffer protocol) under the key of the same
        index, all in one batch. Returns 0 when every key is stored (a key that exists
        keeps its first value), else the first failing key's negative code; -3000 when the
        lists differ in length or a value is not a C-contiguous buffer.
        """
    def get_batch(self, arg0: List[str]) -> List[bytes]:
        """The values under the keys `arg0`, as `get` gives each (`b""` for a missing key)."""
    def evict(
        self,
        keys: List[str],
        src_media: int = 1,
        dst_media: int = 2,
        flags: int = 0,
    ) -> int:
        """Evict keys from src_media to dst_media. Only DRAM->SSD supported. Returns 0 on
        success.

        Media as 1.3.0 numbers them: 1 DRAM, 2 SSD. Each object is written to its local
        service's SSD tier (if it is not there yet), then its DRAM replicas are dropped;
        gets read it from SSD afterwards. Otherwise the first failing key's code: -3007
        missing, -3013 no SSD tier, -3104 held by a reader, -3000 another media pair.
        `flags` is accepted for 1.3.0's callers.
        """
    def prefetch(
        self,
        keys: List[str],
        src_media: int = 2,
        dst_media: int = 1,
        flags: int = 0,
    ) -> int:
        """Prefetch keys from src_media to dst_media. Only SSD->DRAM supported. Returns 0 on
        success.

        Media as 1.3.0 numbers them: 2 SSD, 1 DRAM. Each object only on SSD is copied back
        into DRAM (colder objects make room); one already in DRAM is done. Otherwise the
        first failing key's code: -3007 missing, -3004 not back in time, -3000 another
        media pair. `flags` is accepted for 1.3.0's callers.
        """
    def batch_alloc(
        self,
        keys: List[str],
        sizes: Ints,
        media: int = 1,
        leaseTtlMs: int = 0,
    ) -> List[int]:
        """Allocates an object of `sizes[i]` bytes under each key for writing in place and
        returns its pool address (a positive integer), or the key's negative error code.

        Fill the addresses with `batch_copy` (any number of pieces, from any thread), then
        end with `batch_write_finish`. `media`: 1 (DRAM; other media answer -3000).
        `leaseTtlMs`: how long the allocation lasts (0: the pool's put lease); after it,
        copies into it are refused (-3106) and it is rolled back. Asking again for a key
        this client is still writing returns the same address; a key that exists answers
        -3006.
        """
    def batch_copy(
        self,
        gva_ptrs: Ints,
        buffer_ptrs: Ints,
        sizes: Ints,
        direct: int = 1,
        flag: int = 0,
    ) -> int:
        """Copies `sizes[i]` bytes between the buffer at `buffer_ptrs[i]` and the pool address
        `gva_ptrs[i]`: into the pool with `direct` 3 (H2G), out of it with 2 (G2H), either
        with 9 (AUTO: as the address's grant says). Returns 0 or a negative error code.

        An address must lie, with its size, inside an allocation of this client
        (`batch_alloc`, until `batch_write_finish`) for writing, or inside a replica this
        client holds a read lease on (`batch_add_lease`, addresses from `gva_list()`) for
        reading. Every copy is checked before any byte moves: -3102 outside them, -3101 the
        wrong way, -3106 after the allocation or lease ended, -3000 for bad buffers or
        lists of different lengths. Device directions (0 L2G, 1 G2L, the default) answer
        -3000: this build has no device runtime. `flag` is accepted for 1.3.0's callers.
        """
    def batch_copy_layers(
        self,
        gva_ptrs: Ints,
        buffer_ptrs: IntRows,
        sizes: IntRows,
        direct: int = 1,
        flag: int = 0,
    ) -> int:
        """`batch_copy` of layers: piece `i` is the layers `buffer_ptrs[i][j]` /
        `sizes[i][j]`, gathered into the pool from the address `gva_ptrs[i]` on, or
        scattered out of it. Returns 0 or a negative error code, as `batch_copy`.
        """
    def batch_write_finish(self, keys: List[str], res: List[int]) -> List[int]:
        """Notify meta service that the writes for the given keys are finished. res is per-key
        write result (0=OK, non-zero=FAIL). Returns per-key meta service update result.

        A key whose result is 0 becomes visible to every reader; any other is rolled back
        (answer 0 once done). A result of 0 for a key this client is not writing answers 0
        when the key is stored (finished already, e.g. by a second writer of the same
        allocation, or stored by a put: its value stays, as in 1.3.0), else -3000 (also for
        every key when the lists differ in length); -3106, and a rollback, for an
        allocation whose lease has ended.
        """
    def batch_add_lease(self, keys: List[str], leaseTtlMs: int = 0) -> List[int]:
        """Leases each object for reading in place: until `batch_remove_lease` or the end of
        the lease (`leaseTtlMs`, 0: the pool's read lease), it cannot be removed or
        evicted, and the addresses of its `get_key_info(key).gva_list()` can be read with
        `batch_copy`. One code per key: 0, -3007 when missing.
        """
    def batch_remove_lease(self, keys: List[str]) -> int:
        """Ends one read lease this client holds on each key (`batch_add_lease` twice, release
        twice); with a key's last lease, its addresses read nothing any more. 0, or -3000
        (and nothing released) when a key holds no lease here.
        """
    def register_buffer(self, buffer_ptr: int, size: int) -> int:
        """Register a memory buffer for direct access operations: `size` bytes at
        `buffer_ptr` that later pointer calls will use. Optional on host memory (every call
        works without it). Returns 0, -3005 when the region is registered already, or
        -3000 for a null address, size 0, or an overlap with another registered region.
        """
    def unregister_buffer(self, buffer_ptr: int, size: int) -> int:
        """UnRegister a memory buffer for direct access operations: forgets a buffer
        `register_buffer` registered; 0, or -3000 when no region of that address and size is
        registered.
        """

class ReplicateConfig:
    """Configuration for replica allocation policy."""

    preferredLocalServiceIDs: List[int]
    """List of instance IDs for forced storage. The values in the list must be unique,
    and the list size must be equal to replicaNum. (Here: at most `replicaNum`; the
    pool places the other replicas.)
    """
    replicaNum: int
    """Less than or equal to 8. Replicas per object: 1 unless set (0 reads as 1)."""
    def __init__(self) -> None: ...

class KeyInfo:
    """Where an object lives: its size, and one location and medium per replica."""

    def size(self) -> int:
        """The object's size in bytes."""
    def loc_list(self) -> List[int]:
        """The local service of each replica."""
    def type_list(self) -> List[int]:
        """The medium of each replica, numbered as 1.3.0 numbers media: 0 HBM, 1 DRAM, 2 SSD."""
    def gva_list(self) -> List[int]:
        """The pool address of each replica, for `batch_copy` under a read lease
        (`batch_add_lease`); 0 for a replica that has none.
        """

class MetaService:
    """Class for memcache meta service process. (Here: the meta service runs in this process.)"""

    @staticmethod
    def main() -> int:
        """Start the meta service process directly. This is a blocking call. It serves until
        SIGINT or SIGTERM, then returns 0 (or an error code if it could not start).
        Configured by `setup`, else like `mmc meta`: the TOML file named by
        `MMC_META_CONFIG`, else 1.3.0's file named by `MMC_META_CONFIG_PATH`, then
        `MMC_META_*` variables (`MMC_META_DISCOVERY_URL=tcp://127.0.0.1:5000`).
        """
    @staticmethod
    def setup(config: MetaConfig) -> int:
        """Set meta service startup config.

        The following `main()` serves with `config` (1.3.0's `MetaConfig`) instead of the
        environment. Returns 0, or -3000 for a value this service cannot honour (`ha_enable`,
        TLS, KV events, …; the reason goes to standard error).
        """

class MmcCopyDirect(IntEnum):
    """Where a copy goes: host (`H`), device-local (`L`) or global pool (`G`) memory."""

    SMEMB_COPY_L2G = 0
    SMEMB_COPY_G2L = 1
    SMEMB_COPY_G2H = 2
    SMEMB_COPY_H2G = 3

class LocalConfig:
    """Local configuration for memcache client."""

    aggregate_io: bool
    """Enable read/write aggregate."""
    aggregate_num: int
    """Aggregate number."""
    backend_id: str
    """Backend identity for kv_event, e.g. pod IP."""
    client_retry_milliseconds: int
    """The total retry duration when client requests meta service."""
    client_timeout_seconds: int
    """Client request timeout in seconds."""
    config_store_tls_ca_crl_path: str
    """Config store TLS CA CRL path."""
    config_store_tls_ca_path: str
    """Config store TLS CA certificate path."""
    config_store_tls_cert_path: str
    """Config store TLS certificate path."""
    config_store_tls_decrypter_path: str
    """Config store TLS decrypter library path."""
    config_store_tls_enable: bool
    """Enable TLS for config_store."""
    config_store_tls_key_pass_path: str
    """Config store TLS key passphrase path."""
    config_store_tls_key_path: str
    """Config store TLS key path."""
    config_store_tls_package_path: str
    """Config store TLS package path."""
    config_store_url: str
    """Config store url."""
    dram_size: str
    """DRAM space usage, supports formats like 1GB, 2MB, etc."""
    hbm_size: str
    """HBM space usage."""
    hcom_tls_ca_crl_path: str
    """HCOM TLS CA CRL path."""
    hcom_tls_ca_path: str
    """HCOM TLS CA certificate path."""
    hcom_tls_cert_path: str
    """HCOM TLS certificate path."""
    hcom_tls_decrypter_path: str
    """HCOM TLS decrypter library path."""
    hcom_tls_enable: bool
    """Enable TLS for HCOM."""
    hcom_tls_key_pass_path: str
    """HCOM TLS key passphrase path."""
    hcom_tls_key_path: str
    """HCOM TLS key path."""
    hcom_url: str
    """HCOM URL for RDMA network."""
    log_level: str
    """Log level: debug, info, warn, error."""
    max_dram_size: str
    """The MAX size of dram_size in all local processes."""
    max_hbm_size: str
    """The MAX size of hbm_size in all local processes."""
    meta_service_url: str
    """Meta service start-up url."""
    protocol: str
    """Data transfer protocol: host_rdma, host_urma, host_tcp, host_shm, device_rdma, device_urma,
    device_uboe, device_sdma.
    """
    read_thread_pool_size: int
    """Read thread pool size."""
    tag: str
    """Tag of this rank in MemFabric Big Memory, used with tag_op_info to control the
    data op type (protocol) between tag pairs, e.g. tag1.
    """
    tag_op_info: str
    """Data op type between tags, separated by commas, e.g. "tag1:HOST_TCP:tag2,tag2:DEVICE_RDMA:tag3".
    Op type whitelist: DEVICE_SDMA, DEVICE_RDMA, DEVICE_URMA, DEVICE_UBOE, HOST_RDMA,
    HOST_TCP, HOST_URMA, HOST_SHM, AIV_SDMA, DEVICE_MTE.
    """
    tls_ca_crl_path: str
    """TLS CA CRL path."""
    tls_ca_path: str
    """TLS CA certificate path."""
    tls_cert_path: str
    """TLS certificate path."""
    tls_decrypter_path: str
    """TLS decrypter library path."""
    tls_enable: bool
    """Enable TLS for metaservice."""
    tls_key_pass_path: str
    """TLS key passphrase path."""
    tls_key_path: str
    """TLS key path."""
    tls_package_path: str
    """TLS package path."""
    world_size: int
    """The maximum supported rank count."""
    write_thread_pool_size: int
    """Write thread pool size."""
    def __init__(self) -> None: ...
    def str(self) -> str:
        """Returns a string representation of all member variables."""

class MetaConfig:
    """Meta service configuration."""

    config_store_tls_ca_crl_path: str
    """Config store TLS CA CRL path."""
    config_store_tls_ca_path: str
    """Config store TLS CA certificate path."""
    config_store_tls_cert_path: str
    """Config store TLS certificate path."""
    config_store_tls_decrypter_path: str
    """Config store TLS decrypter library path."""
    config_store_tls_enable: bool
    """Enable TLS for config store."""
    config_store_tls_key_pass_path: str
    """Config store TLS key passphrase path."""
    config_store_tls_key_path: str
    """Config store TLS key path."""
    config_store_tls_package_path: str
    """Config store TLS package path."""
    config_store_url: str
    """Config store url."""
    defrag_evict_threshold: int
    """Defrag eviction threshold in percentage."""
    evict_check_interval_seconds: int
    """Periodic eviction check interval in seconds. Set to 0 to disable."""
    evict_threshold_high: int
    """Eviction high threshold in percentage."""
    evict_threshold_low: int
    """Eviction low threshold in percentage."""
    evict_yield_duration_us: int
    """Sleep duration in microseconds during each yield. Default 100us."""
    evict_yield_interval: int
    """Number of evicted objects between yields. 0 means yield disabled."""
    ha_enable: bool
    """Enable or disable high availability deployment."""
    kv_events_block_size: int
    """block_size for published KV events (0 = omit)."""
    kv_events_enable: bool
    """Enable KV cache event publisher (default false)."""
    kv_events_endpoint: str
    """ZMQ PUB bind endpoint for KV events, e.g. tcp://0.0.0.0:5557."""
    kv_events_hash_as_int: bool
    """Emit seq/block hash as low-64-bit int (true, default; aligns vLLM
    VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES) or full hex string (false).
    """
    kv_events_model_name: str
    """Model name tag for published KV events."""
    kv_events_queue_capacity: int
    """Bounded queue capacity for async KV event publishing."""
    kv_events_tenant_id: str
    """tenant_id for published KV events."""
    kv_events_transport_type: int
    """Transport plugin type for KV events (KV_EVENT_TRANSPORT enum, see mmc_types.h)."""
    lease_ttl_ms: int
    """Default read lease TTL in milliseconds."""
    log_level: str
    """Log level: debug, info, warn, error."""
    log_output_target: str
    """Log output target: screen (stdout only), file (rotating file only), both (stdout + file)."""
    log_path: str
    """Log directory path."""
    log_rotation_file_count: int
    """Log rotation file count."""
    log_rotation_file_size: int
    """Log rotation file size in MB."""
    lru_shard_count: int
    """Meta LRU shard count. Must be a power of two in the range [1, 1024].
    Takes effect only when lru_type is sharded_lru.
    """
    lru_type: int
    """Meta LRU type: 0=lru, 1=sharded_lru (default)."""
    meta_service_url: str
    """Meta service start-up url."""
    metrics_url: str
    """The metrics HTTP service url."""
    tls_ca_crl_path: str
    """TLS CA CRL path."""
    tls_ca_path: str
    """TLS CA certificate path."""
    tls_cert_path: str
    """TLS certificate path."""
    tls_decrypter_path: str
    """TLS decrypter library path."""
    tls_enable: bool
    """Enable TLS for metaservice."""
    tls_key_pass_path: str
    """TLS key passphrase path."""
    tls_key_path: str
    """TLS key path."""
    tls_package_path: str
    """TLS package path."""
    zmq_enable_curve: bool
    """Enable ZMQ CURVE encryption for the zmq transport (default false)."""
    zmq_private_key: str
    """ZMQ CURVE server secret key (Z85, 40 chars). Write-only: the
    getter returns "***" to avoid leaking the private key material.
    """
    zmq_public_key: str
    """ZMQ CURVE server public key (Z85, 40 chars). Subscribers use it to decrypt."""
    def __init__(self) -> None: ...
    def str(self) -> str:
        """Returns a string representation of all member variables."""
