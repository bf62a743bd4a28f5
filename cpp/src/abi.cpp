// The C++ side of the bridge: the C ABI of detail/abi.h over the functions cxx
// generates from bridge/src/lib.rs. Nothing here throws to the caller.

#include "memcache/detail/abi.h"

#include <cstring>
#include <new>

#include "memcache-bridge/src/lib.rs.h"
#include "rust/cxx.h"

#define MEMCACHE_EXPORT extern "C" __attribute__((visibility("default")))

struct memcache_store {
    rust::Box<memcache::ffi::Store> inner;
};

namespace {

static_assert(sizeof(void *) == sizeof(size_t), "addresses travel as size_t");

template <typename T>
rust::Slice<const T> in(const T *p, size_t n) {
    // rust::Slice rejects a null pointer even for an empty slice.
    static const T empty{};
    return rust::Slice<const T>(n == 0 || p == nullptr ? &empty : p, p == nullptr ? 0 : n);
}

rust::Slice<const size_t> addresses(const void *const *p, size_t n) {
    return in(reinterpret_cast<const size_t *>(p), n);
}

size_t total(const size_t *lens, size_t n) {
    size_t sum = 0;
    for (size_t i = 0; i < n; ++i) sum += lens[i];
    return sum;
}

constexpr int32_t kInvalid = -3000;
constexpr int32_t kNotInit = -3019;

}  // namespace

MEMCACHE_EXPORT memcache_store *memcache_store_new(void) {
    try {
        return new memcache_store{memcache::ffi::store_new()};
    } catch (...) {
        return nullptr;
    }
}

MEMCACHE_EXPORT void memcache_store_free(memcache_store *store) { delete store; }

MEMCACHE_EXPORT int32_t memcache_init(memcache_store *store, uint32_t device_id, int init_bm) {
    return store ? store->inner->init(device_id, init_bm != 0) : kNotInit;
}

MEMCACHE_EXPORT int32_t memcache_tear_down(memcache_store *store) {
    return store ? store->inner->tear_down() : kNotInit;
}

MEMCACHE_EXPORT int32_t memcache_setup(memcache_store *store,
                                       const mmc_local_config_t *config) {
    if (!store) return kNotInit;
    try {
        return store->inner->setup(reinterpret_cast<size_t>(config));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_local_service_id(memcache_store *store, uint32_t *out) {
    if (!store) return kNotInit;
    if (!out) return kInvalid;
    return store->inner->local_service_id(*out);
}

MEMCACHE_EXPORT int32_t memcache_register_buffer(memcache_store *store, const void *addr,
                                                 size_t size) {
    return store ? store->inner->register_buffer(reinterpret_cast<size_t>(addr), size)
                 : kNotInit;
}

MEMCACHE_EXPORT int32_t memcache_unregister_buffer(memcache_store *store, const void *addr,
                                                   size_t size) {
    return store ? store->inner->unregister_buffer(reinterpret_cast<size_t>(addr), size)
                 : kNotInit;
}

#define MEMCACHE_CHECK_BATCH(out, n)                              \
    do {                                                          \
        if (!(out) && (n) > 0) return kInvalid;                   \
        if (!store) {                                             \
            for (size_t i = 0; i < (n); ++i) (out)[i] = kNotInit; \
            return kNotInit;                                      \
        }                                                         \
    } while (0)

MEMCACHE_EXPORT int32_t memcache_put(memcache_store *store, const uint8_t *keys,
                                     const size_t *key_lens, size_t n_keys,
                                     const size_t *counts, const void *const *addrs,
                                     const size_t *sizes, size_t n_layers, int32_t direct,
                                     uint32_t replica_num, const int32_t *preferred,
                                     size_t n_preferred, int32_t *out) {
    MEMCACHE_CHECK_BATCH(out, n_keys);
    try {
        return store->inner->put(in(keys, total(key_lens, n_keys)), in(key_lens, n_keys),
                                 in(counts, n_keys), addresses(addrs, n_layers),
                                 in(sizes, n_layers), direct, replica_num,
                                 in(preferred, n_preferred),
                                 rust::Slice<int32_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_get(memcache_store *store, const uint8_t *keys,
                                     const size_t *key_lens, size_t n_keys,
                                     const size_t *counts, void *const *addrs,
                                     const size_t *sizes, size_t n_layers, int32_t direct,
                                     int32_t *out) {
    MEMCACHE_CHECK_BATCH(out, n_keys);
    try {
        return store->inner->get(in(keys, total(key_lens, n_keys)), in(key_lens, n_keys),
                                 in(counts, n_keys), addresses(addrs, n_layers),
                                 in(sizes, n_layers), direct,
                                 rust::Slice<int32_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_remove(memcache_store *store, const uint8_t *keys,
                                        const size_t *key_lens, size_t n_keys, int32_t *out) {
    MEMCACHE_CHECK_BATCH(out, n_keys);
    try {
        return store->inner->remove(in(keys, total(key_lens, n_keys)), in(key_lens, n_keys),
                                    rust::Slice<int32_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_exist(memcache_store *store, const uint8_t *keys,
                                       const size_t *key_lens, size_t n_keys, int32_t *out) {
    MEMCACHE_CHECK_BATCH(out, n_keys);
    try {
        return store->inner->exist(in(keys, total(key_lens, n_keys)), in(key_lens, n_keys),
                                   rust::Slice<int32_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_key_info(memcache_store *store, const uint8_t *keys,
                                          const size_t *key_lens, size_t n_keys,
                                          memcache_key_info_t *out) {
    if (!out && n_keys > 0) return kInvalid;
    for (size_t i = 0; i < n_keys; ++i) {
        std::memset(&out[i], 0, sizeof out[i]);
        out[i].status = kNotInit;
    }
    if (!store) return kNotInit;
    try {
        auto infos = store->inner->key_info(in(keys, total(key_lens, n_keys)), in(key_lens, n_keys));
        for (size_t i = 0; i < n_keys && i < infos.size(); ++i) {
            const auto &info = infos[i];
            out[i].size = info.size;
            out[i].device_id = info.device_id;
            out[i].status = info.status;
            out[i].locations = static_cast<uint32_t>(info.services.size() < 8 ? info.services.size() : 8);
            for (uint32_t j = 0; j < out[i].locations; ++j) {
                out[i].services[j] = info.services[j];
                out[i].media[j] = info.media[j];
                out[i].gvas[j] = j < info.gvas.size() ? info.gvas[j] : 0;
            }
        }
        return 0;
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_batch_alloc(memcache_store *store, const uint8_t *keys,
                                             const size_t *key_lens, size_t n_keys,
                                             const uint64_t *sizes, size_t n_sizes,
                                             uint16_t media, uint64_t lease_ttl_ms,
                                             int64_t *out) {
    if (!out && n_keys > 0) return kInvalid;
    if (!store) {
        for (size_t i = 0; i < n_keys; ++i) out[i] = kNotInit;
        return kNotInit;
    }
    try {
        return store->inner->batch_alloc(in(keys, total(key_lens, n_keys)),
                                         in(key_lens, n_keys), in(sizes, n_sizes), media,
                                         lease_ttl_ms, rust::Slice<int64_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_batch_copy(memcache_store *store, const uint64_t *gvas,
                                            void *const *bufs, const size_t *sizes, size_t n,
                                            int32_t direct) {
    if (!store) return kNotInit;
    try {
        return store->inner->batch_copy(in(gvas, n), addresses(bufs, n), in(sizes, n), direct);
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_batch_write_finish(memcache_store *store, const uint8_t *keys,
                                                    const size_t *key_lens, size_t n_keys,
                                                    const int32_t *results, size_t n_results,
                                                    int32_t *out) {
    MEMCACHE_CHECK_BATCH(out, n_keys);
    try {
        return store->inner->batch_write_finish(in(keys, total(key_lens, n_keys)),
                                                in(key_lens, n_keys), in(results, n_results),
                                                rust::Slice<int32_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_batch_add_lease(memcache_store *store, const uint8_t *keys,
                                                 const size_t *key_lens, size_t n_keys,
                                                 uint64_t ttl_ms, int32_t *out) {
    MEMCACHE_CHECK_BATCH(out, n_keys);
    try {
        return store->inner->batch_add_lease(in(keys, total(key_lens, n_keys)),
                                             in(key_lens, n_keys), ttl_ms,
                                             rust::Slice<int32_t>(out, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_batch_remove_lease(memcache_store *store, const uint8_t *keys,
                                                    const size_t *key_lens, size_t n_keys) {
    if (!store) return kNotInit;
    try {
        return store->inner->batch_remove_lease(in(keys, total(key_lens, n_keys)),
                                                in(key_lens, n_keys));
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_tier_move(memcache_store *store, const uint8_t *keys,
                                           const size_t *key_lens, size_t n_keys, uint8_t src,
                                           uint8_t dst, int prefetch) {
    if (!store) return kNotInit;
    try {
        return store->inner->tier_move(in(keys, total(key_lens, n_keys)), in(key_lens, n_keys),
                                       src, dst, prefetch != 0);
    } catch (...) {
        return -1;
    }
}

MEMCACHE_EXPORT int32_t memcache_remove_all(memcache_store *store) {
    if (!store) return kNotInit;
    try {
        return store->inner->remove_all();
    } catch (...) {
        return -1;
    }
}
