// The C++ side of the bridge: the C ABI of detail/abi.h over the functions cxx
// generates from bridge/src/lib.rs. Nothing here throws to the caller.

#include "memcache/detail/abi.h"

#include <cstring>
#include <new>
#include <utility>

#include "memcache-bridge/src/lib.rs.h"
#include "rust/cxx.h"

#define MEMCACHE_EXPORT extern "C" __attribute__((visibility("default")))

struct memcache_store {
    rust::Box<memcache::ffi::Store> inner;
};

namespace {

static_assert(sizeof(void *) == sizeof(size_t), "addresses travel as size_t");

constexpr int32_t kInvalid = -3000;
constexpr int32_t kNotInit = -3019;

// An array argument that does not match its count: a null pointer with a count above
// 0, or lengths that add up past size_t. Thrown by the helpers below, answered -3000.
struct Invalid {};

// The `n` items at `p` as a slice: empty for n == 0 whatever `p` is (never read),
// Invalid for a null `p` with n > 0. Every array of this file is read through here.
template <typename T>
rust::Slice<T> items(T *p, size_t n) {
    if (n == 0) return rust::Slice<T>();
    if (p == nullptr) throw Invalid{};
    return rust::Slice<T>(p, n);
}

rust::Slice<const size_t> addresses(const void *const *p, size_t n) {
    return items(reinterpret_cast<const size_t *>(p), n);
}

// The sum of the key lengths; Invalid when it does not fit a size_t.
size_t total(rust::Slice<const size_t> lens) {
    size_t sum = 0;
    for (size_t len : lens)
        if (__builtin_add_overflow(sum, len, &sum)) throw Invalid{};
    return sum;
}

// Keys back to back and their lengths, checked as one.
struct Keys {
    rust::Slice<const uint8_t> bytes;
    rust::Slice<const size_t> lens;
};

Keys keys_of(const uint8_t *keys, const size_t *key_lens, size_t n_keys) {
    rust::Slice<const size_t> lens = items(key_lens, n_keys);
    return Keys{items(keys, total(lens)), lens};
}

// Runs a call of the Rust store: -3019 for a null store, -3000 for arrays that do not
// match their counts, -1 for anything else thrown. `fill(code)` writes a refusal into
// the per-key results, which the caller has checked.
template <typename Call, typename Fill>
int32_t guarded(memcache_store *store, Call &&call, Fill &&fill) {
    int32_t code = kNotInit;
    if (store) {
        try {
            return call(*store->inner);
        } catch (const Invalid &) {
            code = kInvalid;
        } catch (...) {
            return -1;
        }
    }
    fill(code);
    return code;
}

template <typename Call>
int32_t guarded(memcache_store *store, Call &&call) {
    return guarded(store, std::forward<Call>(call), [](int32_t) {});
}

// As guarded, for a call with one result per key in `out`: refusals go to every one.
template <typename T, typename Call>
int32_t per_key(memcache_store *store, T *out, size_t n, Call &&call) {
    if (!out && n > 0) return kInvalid;
    return guarded(
        store, [&](memcache::ffi::Store &s) { return call(s, items(out, n)); },
        [&](int32_t code) {
            for (size_t i = 0; i < n; ++i) out[i] = code;
        });
}

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

MEMCACHE_EXPORT int32_t memcache_put(memcache_store *store, const uint8_t *keys,
                                     const size_t *key_lens, size_t n_keys,
                                     const size_t *counts, const void *const *addrs,
                                     const size_t *sizes, size_t n_layers, int32_t direct,
                                     uint32_t replica_num, const int32_t *preferred,
                                     size_t n_preferred, int32_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int32_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.put(k.bytes, k.lens, items(counts, n_keys), addresses(addrs, n_layers),
                     items(sizes, n_layers), direct, replica_num,
                     items(preferred, n_preferred), o);
    });
}

MEMCACHE_EXPORT int32_t memcache_get(memcache_store *store, const uint8_t *keys,
                                     const size_t *key_lens, size_t n_keys,
                                     const size_t *counts, void *const *addrs,
                                     const size_t *sizes, size_t n_layers, int32_t direct,
                                     int32_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int32_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.get(k.bytes, k.lens, items(counts, n_keys), addresses(addrs, n_layers),
                     items(sizes, n_layers), direct, o);
    });
}

MEMCACHE_EXPORT int32_t memcache_remove(memcache_store *store, const uint8_t *keys,
                                        const size_t *key_lens, size_t n_keys, int32_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int32_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.remove(k.bytes, k.lens, o);
    });
}

MEMCACHE_EXPORT int32_t memcache_exist(memcache_store *store, const uint8_t *keys,
                                       const size_t *key_lens, size_t n_keys, int32_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int32_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.exist(k.bytes, k.lens, o);
    });
}

MEMCACHE_EXPORT int32_t memcache_key_info(memcache_store *store, const uint8_t *keys,
                                          const size_t *key_lens, size_t n_keys,
                                          memcache_key_info_t *out) {
    if (!out && n_keys > 0) return kInvalid;
    auto fill = [&](int32_t code) {
        for (size_t i = 0; i < n_keys; ++i) {
            std::memset(&out[i], 0, sizeof out[i]);
            out[i].status = code;
        }
    };
    fill(kNotInit);
    return guarded(
        store,
        [&](memcache::ffi::Store &s) {
            Keys k = keys_of(keys, key_lens, n_keys);
            auto infos = s.key_info(k.bytes, k.lens);
            for (size_t i = 0; i < n_keys && i < infos.size(); ++i) {
                const auto &info = infos[i];
                out[i].size = info.size;
                out[i].device_id = info.device_id;
                out[i].status = info.status;
                out[i].locations = static_cast<uint32_t>(
                    info.services.size() < 8 ? info.services.size() : 8);
                for (uint32_t j = 0; j < out[i].locations; ++j) {
                    out[i].services[j] = info.services[j];
                    out[i].media[j] = info.media[j];
                    out[i].gvas[j] = j < info.gvas.size() ? info.gvas[j] : 0;
                }
            }
            return 0;
        },
        fill);
}

MEMCACHE_EXPORT int32_t memcache_batch_alloc(memcache_store *store, const uint8_t *keys,
                                             const size_t *key_lens, size_t n_keys,
                                             const uint64_t *sizes, size_t n_sizes,
                                             uint16_t media, uint64_t lease_ttl_ms,
                                             int64_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int64_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.batch_alloc(k.bytes, k.lens, items(sizes, n_sizes), media, lease_ttl_ms, o);
    });
}

MEMCACHE_EXPORT int32_t memcache_batch_copy(memcache_store *store, const uint64_t *gvas,
                                            void *const *bufs, const size_t *sizes, size_t n,
                                            int32_t direct) {
    return guarded(store, [&](memcache::ffi::Store &s) {
        return s.batch_copy(items(gvas, n), addresses(bufs, n), items(sizes, n), direct);
    });
}

MEMCACHE_EXPORT int32_t memcache_batch_write_finish(memcache_store *store, const uint8_t *keys,
                                                    const size_t *key_lens, size_t n_keys,
                                                    const int32_t *results, size_t n_results,
                                                    int32_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int32_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.batch_write_finish(k.bytes, k.lens, items(results, n_results), o);
    });
}

MEMCACHE_EXPORT int32_t memcache_batch_add_lease(memcache_store *store, const uint8_t *keys,
                                                 const size_t *key_lens, size_t n_keys,
                                                 uint64_t ttl_ms, int32_t *out) {
    return per_key(store, out, n_keys, [&](memcache::ffi::Store &s, rust::Slice<int32_t> o) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.batch_add_lease(k.bytes, k.lens, ttl_ms, o);
    });
}

MEMCACHE_EXPORT int32_t memcache_batch_remove_lease(memcache_store *store, const uint8_t *keys,
                                                    const size_t *key_lens, size_t n_keys) {
    return guarded(store, [&](memcache::ffi::Store &s) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.batch_remove_lease(k.bytes, k.lens);
    });
}

MEMCACHE_EXPORT int32_t memcache_tier_move(memcache_store *store, const uint8_t *keys,
                                           const size_t *key_lens, size_t n_keys, uint8_t src,
                                           uint8_t dst, int prefetch) {
    return guarded(store, [&](memcache::ffi::Store &s) {
        Keys k = keys_of(keys, key_lens, n_keys);
        return s.tier_move(k.bytes, k.lens, src, dst, prefetch != 0);
    });
}

MEMCACHE_EXPORT int32_t memcache_remove_all(memcache_store *store) {
    return guarded(store, [&](memcache::ffi::Store &s) { return s.remove_all(); });
}
