// The library's ABI: plain C functions over pointers and lengths, the same for every
// C++ standard library and string ABI. The inline ObjectStore in object_store.h calls
// these; users should call the ObjectStore class (C++) or mmc.h (C) instead.
#ifndef MEMCACHE_DETAIL_ABI_H
#define MEMCACHE_DETAIL_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "memcache/mmc_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct memcache_store memcache_store;

typedef struct {
    uint64_t size;
    uint32_t device_id;
    int32_t status;
    uint32_t locations;
    uint32_t services[8];
    uint16_t media[8];
    uint64_t gvas[8]; /* pool address of each replica, 0 where none */
} memcache_key_info_t;

/* NULL when the client configuration (MMC_CLIENT_CONFIG, MMC_CLIENT_*) is invalid. */
memcache_store *memcache_store_new(void);
void memcache_store_free(memcache_store *store);
int32_t memcache_init(memcache_store *store, uint32_t device_id, int init_bm);
int32_t memcache_tear_down(memcache_store *store);
/* Replaces the configuration of a store that is not initialized (-3005 otherwise). */
int32_t memcache_setup(memcache_store *store, const mmc_local_config_t *config);
int32_t memcache_local_service_id(memcache_store *store, uint32_t *out);
int32_t memcache_register_buffer(memcache_store *store, const void *addr, size_t size);
int32_t memcache_unregister_buffer(memcache_store *store, const void *addr, size_t size);

/* keys: n_keys keys back to back, key_lens[i] bytes each. Key i has counts[i] layers;
 * addrs/sizes list n_layers layers in key order. One code per key goes to out[i]. */
int32_t memcache_put(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                     size_t n_keys, const size_t *counts, const void *const *addrs,
                     const size_t *sizes, size_t n_layers, int32_t direct,
                     uint32_t replica_num, const int32_t *preferred, size_t n_preferred,
                     int32_t *out);
int32_t memcache_get(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                     size_t n_keys, const size_t *counts, void *const *addrs,
                     const size_t *sizes, size_t n_layers, int32_t direct, int32_t *out);
int32_t memcache_remove(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                        size_t n_keys, int32_t *out);
/* out[i]: 1 exists, 0 does not, negative error. */
int32_t memcache_exist(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                       size_t n_keys, int32_t *out);
int32_t memcache_key_info(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                          size_t n_keys, memcache_key_info_t *out);

/* 1.3.0's in-place calls. out[i] of memcache_batch_alloc: the pool address (> 0), or
 * the key's negative code. */
int32_t memcache_batch_alloc(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                             size_t n_keys, const uint64_t *sizes, size_t n_sizes,
                             uint16_t media, uint64_t lease_ttl_ms, int64_t *out);
int32_t memcache_batch_copy(memcache_store *store, const uint64_t *gvas, void *const *bufs,
                            const size_t *sizes, size_t n, int32_t direct);
int32_t memcache_batch_write_finish(memcache_store *store, const uint8_t *keys,
                                    const size_t *key_lens, size_t n_keys,
                                    const int32_t *results, size_t n_results, int32_t *out);
int32_t memcache_batch_add_lease(memcache_store *store, const uint8_t *keys,
                                 const size_t *key_lens, size_t n_keys, uint64_t ttl_ms,
                                 int32_t *out);
int32_t memcache_batch_remove_lease(memcache_store *store, const uint8_t *keys,
                                    const size_t *key_lens, size_t n_keys);
/* prefetch != 0: prefetch, else evict. 0, or the first failing key's code. */
int32_t memcache_tier_move(memcache_store *store, const uint8_t *keys, const size_t *key_lens,
                           size_t n_keys, uint8_t src, uint8_t dst, int prefetch);
int32_t memcache_remove_all(memcache_store *store);

#ifdef __cplusplus
}
#endif

#endif
