/* MemCache Hybrid: the C types the C++ ObjectStore shares with the C API (mmc.h),
 * in a header of their own so object_store.h does not bring the rest of mmc.h. */
#ifndef MEMCACHE_MMC_TYPES_H
#define MEMCACHE_MMC_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#define MMC_URL_LEN 1024
#define MMC_PATH_LEN 1024
#define MMC_TLS_PATH_LEN 256
#define MMC_PROTOCOL_LEN 64
#define MMC_POOL_MODE_LEN 64
#define MMC_SIZE_LEN 32
#define MMC_LOG_LEVEL_LEN 16

/* Bytes at addr + offset, len of them; type 0 host DRAM, 1 device HBM. */
typedef struct {
    uint64_t addr;
    uint32_t type;
    uint64_t offset;
    uint64_t len;
} mmc_buffer;

/* TLS settings of one group, as 1.3.0's seed files name them: caPath, crlPath (checked
 * when set), certPath, keyPath, keyPassPath (the passphrase of an encrypted PKCS#8
 * key), packagePath (accepted, unused), decrypterLibPath (a library whose
 * DecryptPassword turns the stored passphrase into the real one). A process has one
 * TLS identity: the first enabled group is used. */
typedef struct {
    bool tlsEnable;
    char caPath[MMC_TLS_PATH_LEN];
    char crlPath[MMC_TLS_PATH_LEN];
    char certPath[MMC_TLS_PATH_LEN];
    char keyPath[MMC_TLS_PATH_LEN];
    char keyPassPath[MMC_TLS_PATH_LEN];
    char packagePath[MMC_TLS_PATH_LEN];
    char decrypterLibPath[MMC_TLS_PATH_LEN];
} mmc_tls_config;

/* 1.3.0's local configuration of a client (C++: struct local_config of
 * memcache/local_config.h; Python: LocalConfig), for mmc_setup. It lays over
 * MMC_CLIENT_CONFIG / MMC_CLIENT_*: an empty string or a zero number keeps what those
 * say, so a zeroed struct changes nothing. Sizes are bytes with an optional unit,
 * binary as in 1.3.0 ("1GB" is 2^30 bytes). Refused with -3000: an enabled TLS group
 * without CA, certificate or key path, device protocols, malformed sizes, unknown
 * protocol or log level names. A non-zero hbm_size is device memory mmc_init with
 * initBm contributes; mmc_init answers -3000 without a device runtime or with no
 * meta_service_url (the embedded pool has no HBM yet). */
typedef struct {
    char meta_service_url[MMC_URL_LEN]; /* "tcp://HOST:PORT[,...]" */
    char config_store_url[MMC_URL_LEN]; /* accepted, not used */
    char protocol[MMC_PROTOCOL_LEN];    /* host_tcp, host_shm; host_rdma/host_urma: automatic */
    char dram_size[MMC_SIZE_LEN];       /* what mmc_init with initBm contributes */
    char hbm_size[MMC_SIZE_LEN];        /* device memory mmc_init with initBm contributes */
    char max_dram_size[MMC_SIZE_LEN];   /* checked, not used */
    char max_hbm_size[MMC_SIZE_LEN];    /* checked, not used */
    char log_level[MMC_LOG_LEVEL_LEN];  /* debug, info, warn, error */
    uint32_t world_size;                /* accepted, not used */
    uint32_t client_retry_milliseconds; /* accepted, not used */
    uint32_t client_timeout_seconds;    /* deadline of each call to the meta service */
    uint32_t read_thread_pool_size;     /* accepted, not used */
    uint32_t write_thread_pool_size;    /* accepted, not used */
    bool aggregate_io;                  /* accepted, not used */
    int32_t aggregate_num;              /* accepted, not used */
    mmc_tls_config tls;              /* the meta service's control plane */
    mmc_tls_config hcom_tls;         /* the data plane (one identity: see mmc_tls_config) */
    mmc_tls_config config_store_tls; /* accepted as the others (no config store here) */
} mmc_local_config_t;

#endif
