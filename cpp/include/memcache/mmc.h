/* MemCache Hybrid C API (shared/spec/c_and_python_client_api.md, c_structs.md).
 * Every function returns 0 or a negative error code of the spec unless it says
 * otherwise; bad arguments answer -3000 and change nothing. An array argument may be
 * NULL when its count is 0; NULL with a count above 0 answers -3000. */
#ifndef MEMCACHE_MMC_H
#define MEMCACHE_MMC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memcache/mmc_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enumerators rather than macros, so they coexist with memcache::MAX_BATCH_OP_COUNT
 * and friends of object_store.h. */
enum { MAX_BATCH_OP_COUNT = 16384, MAX_BLOB_COPIES = 8 };

/* Copy directions. */
enum { SMEMB_COPY_L2G = 0, SMEMB_COPY_G2L = 1, SMEMB_COPY_G2H = 2, SMEMB_COPY_H2G = 3 };

/* flags of the data calls (mmcc_put, mmcc_get, mmcc_remove, mmcc_batch_put,
 * mmcc_batch_get): run in the background; the call returns a positive handle for
 * mmcc_wait instead of the result (a negative code when it could not start). */
#define MMC_FLAG_ASYNC 1u

/* What mmcc_wait answers besides 0 (the call succeeded) and the error code of a call
 * that failed, negated (3000 and above). */
enum { MMC_WAIT_TIMEOUT = 1, MMC_WAIT_FAILED = 2 };

typedef void (*mmc_log_func)(int level, const char *msg);

typedef struct {
    char discoveryURL[MMC_URL_LEN];
    char configStoreURL[MMC_URL_LEN];
    char httpURL[MMC_URL_LEN];
    bool haEnable;
    int32_t logLevel;
    char logPath[MMC_PATH_LEN];
    int32_t logRotationFileSize;
    int32_t logRotationFileCount;
    uint16_t evictThresholdHigh;
    uint16_t evictThresholdLow;
    mmc_tls_config accTlsConfig;
    mmc_tls_config configStoreTlsConfig;
    bool ubsIoEnable;
} mmc_meta_service_config_t;

typedef struct {
    char discoveryURL[MMC_URL_LEN];
    uint32_t deviceId;
    uint32_t rankId;
    uint32_t worldSize;
    char bmIpPort[MMC_URL_LEN];
    char bmHcomUrl[MMC_URL_LEN];
    uint32_t createId;
    char dataOpType[MMC_PROTOCOL_LEN];
    uint64_t localDRAMSize;
    uint64_t localMaxDRAMSize;
    uint64_t localHBMSize;
    uint64_t localMaxHBMSize;
    char memoryPoolMode[MMC_POOL_MODE_LEN];
    uint32_t flags;
    mmc_tls_config accTlsConfig;
    int32_t logLevel;
    mmc_log_func logFunc;
    mmc_tls_config hcomTlsConfig;
    mmc_tls_config configStoreTlsConfig;
    bool ubsIoEnable;
} mmc_local_service_config_t;

typedef struct {
    char discoveryURL[MMC_URL_LEN];
    uint32_t rankId;
    uint32_t rpcRetryTimeOut;
    uint32_t timeOut;
    uint32_t readThreadPoolNum;
    uint32_t writeThreadPoolNum;
    bool aggregateIO;
    int32_t aggregateNum;
    int32_t logLevel;
    mmc_log_func logFunc;
    mmc_tls_config tlsConfig;
    bool ubsIoEnable;
    char dataOpType[MMC_PROTOCOL_LEN];
} mmc_client_config_t;

typedef enum { NATIVE_AFFINITY = 0 } affinity_policy;

typedef struct {
    uint16_t mediaType;
    affinity_policy policy;
    uint16_t replicaNum; /* 0 reads as 1, at most 8 */
    int32_t preferredLocalServiceIDs[MAX_BLOB_COPIES]; /* negative entries are unset */
} mmc_put_options;

typedef struct {
    uint64_t size;
    uint16_t prot;
    uint8_t numBlobs;
    bool valid;
    uint32_t ranks[MAX_BLOB_COPIES];
    uint16_t types[MAX_BLOB_COPIES]; /* 1.3.0's media numbers: 0 HBM, 1 DRAM, 2 SSD */
    uint64_t gvas[MAX_BLOB_COPIES]; /* pool address of each replica (0: none), for
                                     * mmcc_batch_copy under mmcc_batch_add_lease */
} mmc_data_info;

/* Where an object lives: its first replica's local service and medium. */
typedef struct {
    int32_t status; /* 0, or the error code */
    uint32_t rank;
    uint16_t type; /* 1.3.0's media numbers: 0 HBM, 1 DRAM, 2 SSD */
    uint64_t size;
} mmc_location_t;

/* mmc_init's arguments, as 1.3.0 passes them. */
typedef struct {
    uint32_t deviceId;
    bool initBm; /* contribute memory (a local service in this process); false: pure client */
} mmc_init_config_t;

typedef void *mmc_meta_service_t;
typedef void *mmc_local_service_t;
typedef void *mmc_client_t;

/* Services. A local service with an empty discoveryURL joins this process's embedded
 * pool. NULL on failure. */
mmc_meta_service_t mmcs_meta_service_start(mmc_meta_service_config_t *config);
void mmcs_meta_service_stop(mmc_meta_service_t handle);
mmc_local_service_t mmcs_local_service_start(mmc_local_service_config_t *config);
void mmcs_local_service_stop(mmc_local_service_t handle);

/* The process's client (a singleton). An empty discoveryURL means the embedded pool. */
int32_t mmcc_init(mmc_client_config_t *config);
void mmcc_uninit(void);

/* 1.3.0's process-level set-up. mmc_setup records the configuration of the
 * process's client (-3005 while it runs); mmc_init starts it with that configuration,
 * or with MMC_CLIENT_CONFIG / MMC_CLIENT_* when mmc_setup was not called (-3005 when a
 * client from mmc_init or mmcc_init runs); mmc_uninit stops it (as mmcc_uninit) and
 * keeps the recorded configuration. The mmcc_* calls use the client either starts. */
int32_t mmc_setup(const mmc_local_config_t *config);
int32_t mmc_init(const mmc_init_config_t *config);
void mmc_uninit(void);

/* Records a region of the caller's memory for transfers (-3000: null or size 0, or a
 * region overlapping a recorded one; -3005: recorded already). */
int32_t mmcc_register_buffer(uint64_t addr, uint64_t size);
/* -3000 unless addr and size are exactly those of a recorded region. */
int32_t mmcc_unregister_buffer(uint64_t addr, uint64_t size);
/* The id of the local service mmc_init started; -3018 for a pure client. */
int32_t mmcc_local_service_id(uint32_t *localServiceId);

/* A put of a key that exists answers 0 (the first value stays), as 1.3.0's does; so
 * does each key of mmcc_batch_put. */
int32_t mmcc_put(const char *key, mmc_buffer *buf, mmc_put_options options, uint32_t flags);
int32_t mmcc_get(const char *key, mmc_buffer *buf, uint32_t flags);
int32_t mmcc_query(const char *key, mmc_data_info *info, uint32_t flags);
int32_t mmcc_remove(const char *key, uint32_t flags);
/* 0 when the key exists, -3007 when it does not. */
int32_t mmcc_exist(const char *key, uint32_t flags);
mmc_location_t mmcc_get_location(const char *key, uint32_t flags);

int32_t mmcc_batch_query(const char **keys, size_t keys_count, mmc_data_info *info,
                         uint32_t flags);
/* 0 when every key was removed, else how many were not (results say why). */
int32_t mmcc_batch_remove(const char **keys, uint32_t keys_count, int32_t *remove_results,
                          uint32_t flags);
/* exist_results[i]: 0 exists, -3007 does not, other negative: error. */
int32_t mmcc_batch_exist(const char **keys, uint32_t keys_count, int32_t *exist_results,
                         uint32_t flags);
/* 0, or the code of the first key that failed. */
#ifdef __cplusplus
int32_t mmcc_batch_put(const char **keys, uint32_t keys_count, const mmc_buffer *bufs,
                       mmc_put_options &options, uint32_t flags);
#else
int32_t mmcc_batch_put(const char **keys, uint32_t keys_count, const mmc_buffer *bufs,
                       const mmc_put_options *options, uint32_t flags);
#endif
int32_t mmcc_batch_get(const char **keys, uint32_t keys_count, mmc_buffer *bufs,
                       uint32_t flags);

/* 1.3.0's media numbers (mmcc_batch_malloc, mmcc_evict_keys, mmcc_prefetch_keys). */
enum { MMC_MEDIA_HBM = 0, MMC_MEDIA_DRAM = 1, MMC_MEDIA_SSD = 2 };
/* mmcc_batch_copy's direct value that lets each address's grant decide. */
enum { SMEMB_COPY_AUTO = 9 };

/* 1.3.0's in-place API: allocate, fill in place from any thread, commit; or lease,
 * read in place, release. flags of these calls are accepted and unused. Null arrays of
 * a non-empty batch answer -3000 (batches above MAX_BATCH_OP_COUNT are split); before
 * mmcc_init / mmc_init, -3019.
 *
 * mmcc_batch_malloc allocates sizes[i] bytes under keys[i] for lease_ttl_ms (0: the
 * pool's put lease). media: MMC_MEDIA_DRAM; HBM and SSD are refused per key (-3000),
 * any other number for the call (-3000). gvas[i]: the pool address, 0 on failure;
 * results[i]: 0 or the key's code (-3006 the key exists, -3000 size 0). Returns how
 * many keys failed, or the call's code. */
int32_t mmcc_batch_malloc(const char **keys, uint32_t keys_count, const uint64_t *sizes,
                          uint16_t media, uint64_t lease_ttl_ms, uint64_t *gvas,
                          int32_t *results, uint32_t flags);
/* sizes[i] bytes between bufs[i] and the pool address gvas[i] (anywhere inside an
 * allocation or a leased replica): direct SMEMB_COPY_H2G into an allocation of this
 * client, SMEMB_COPY_G2H out of a replica leased here, SMEMB_COPY_AUTO either. All
 * copies are checked before a byte moves: 0, -3102 an address outside them, -3101 the
 * wrong way, -3106 the allocation or lease has ended, -3000 bad buffers or a device
 * direction (L2G, G2L). */
int32_t mmcc_batch_copy(const uint64_t *gvas, void *const *bufs, const uint64_t *sizes,
                        uint32_t count, int32_t direct, uint32_t flags);
/* write_results[i] 0 commits keys[i], any other value rolls it back. finish_results[i]:
 * 0, -3000 not being written by this client, -3106 the allocation ended (rolled back).
 * Returns how many keys failed, or the call's code. */
int32_t mmcc_batch_write_finish(const char **keys, uint32_t keys_count,
                                const int32_t *write_results, int32_t *finish_results,
                                uint32_t flags);
/* Read leases for lease_ttl_ms (0: the pool's read lease): the objects stay, and the
 * gvas of their mmcc_query can be read with mmcc_batch_copy. lease_results[i]: 0,
 * -3007 missing. Returns how many keys failed, or the call's code. */
int32_t mmcc_batch_add_lease(const char **keys, uint32_t keys_count, uint64_t lease_ttl_ms,
                             int32_t *lease_results, uint32_t flags);
/* Releases this client's read leases on the keys: 0, or -3000 (nothing released) when
 * a key holds none here. */
int32_t mmcc_batch_remove_lease(const char **keys, uint32_t keys_count, uint32_t flags);
/* DRAM -> SSD only: 0, or the first failing key's code (-3007 missing, -3013 no SSD
 * tier, -3104 held by a reader, -3000 another media pair). */
int32_t mmcc_evict_keys(const char **keys, uint32_t keys_count, uint16_t src_media,
                        uint16_t dst_media, uint32_t flags);
/* SSD -> DRAM only: 0, or the first failing key's code (-3007 missing, -3004 not back
 * in time, -3000 another media pair); a key in DRAM already is done. */
int32_t mmcc_prefetch_keys(const char **keys, uint32_t keys_count, uint16_t src_media,
                           uint16_t dst_media, uint32_t flags);

/* Waits up to timeoutSec seconds (0 or less: only looks) for a call made with
 * MMC_FLAG_ASYNC. Answers
 *   0                 the call succeeded;
 *   MMC_WAIT_TIMEOUT  it is still running: the handle stays valid, wait again;
 *   above 2           it failed with that error code negated (3007: -3007, ...);
 *   MMC_WAIT_FAILED   it failed with -1, the code without a number of its own;
 *   -3015             the handle is unknown: never given, already collected, or
 *                     dropped by mmcc_uninit.
 * A finished call's result is answered once. A handle never waited for is freed by
 * mmcc_uninit (and mmc_uninit), with every other result not collected: nothing
 * outlives the client that made it, and no call needs a wait to release it. */
int32_t mmcc_wait(int32_t waitHandle, int32_t timeoutSec);

/* Logging: levels 0 DEBUG, 1 INFO, 2 WARN, 3 ERROR. Without a logger, messages go to
 * standard output. */
int32_t mmc_set_extern_logger(void (*func)(int level, const char *msg));
int32_t mmc_set_log_level(int level);

#ifdef __cplusplus
}
#endif

#endif
