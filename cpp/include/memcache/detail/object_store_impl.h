// The ObjectStore behind CreateObjectStore(), compiled in the caller's translation unit
// on purpose (see object_store.h). It only reshapes arguments; the work is in the library.
#ifndef MEMCACHE_DETAIL_OBJECT_STORE_IMPL_H
#define MEMCACHE_DETAIL_OBJECT_STORE_IMPL_H

#include <new>

#include "memcache/detail/abi.h"

namespace memcache {
namespace detail {

// Keys back to back, with their lengths.
struct Keys {
    std::vector<uint8_t> bytes;
    std::vector<size_t> lens;

    explicit Keys(const std::vector<std::string> &keys) {
        size_t total = 0;
        for (const auto &k : keys) total += k.size();
        bytes.reserve(total);
        lens.reserve(keys.size());
        for (const auto &k : keys) {
            bytes.insert(bytes.end(), k.begin(), k.end());
            lens.push_back(k.size());
        }
    }
};

inline const uint8_t *bytes_of(const std::string &s) {
    return reinterpret_cast<const uint8_t *>(s.data());
}

class RustObjectStore final : public ObjectStore {
public:
    explicit RustObjectStore(memcache_store *store) : store_(store) {}
    ~RustObjectStore() override { memcache_store_free(store_); }
    RustObjectStore(const RustObjectStore &) = delete;
    RustObjectStore &operator=(const RustObjectStore &) = delete;

    int Init(const uint32_t deviceId, bool initBm = true) override {
        return memcache_init(store_, deviceId, initBm ? 1 : 0);
    }
    int TearDown() override { return memcache_tear_down(store_); }

    int Setup(const local_config &config) override {
        mmc_local_config_t c;
        int32_t rc = ToC(config, c);
        return rc != 0 ? rc : memcache_setup(store_, &c);
    }

    int RegisterBuffer(void *buffer, size_t size) override {
        return memcache_register_buffer(store_, buffer, size);
    }
    int UnRegisterBuffer(void *buffer, size_t size) override {
        return memcache_unregister_buffer(store_, buffer, size);
    }

    int GetInto(const std::string &key, void *buffer, size_t size,
                const int32_t direct = 2) override {
        return GetIntoLayers(key, {buffer}, {size}, direct);
    }
    int PutFrom(const std::string &key, void *buffer, size_t size, const int32_t direct = 3,
                const ReplicateConfig &replicateConfig = {}) override {
        return PutFromLayers(key, {buffer}, {size}, direct, replicateConfig);
    }

    int PutFromLayers(const std::string &key, const std::vector<void *> &buffers,
                      const std::vector<size_t> &sizes, const int32_t direct = 3,
                      const ReplicateConfig &replicateConfig = {}) override {
        if (buffers.size() != sizes.size()) return MMC_INVALID_PARAM;
        size_t len = key.size(), count = buffers.size();
        int32_t out = MMC_ERROR;
        memcache_put(store_, bytes_of(key), &len, 1, &count, buffers.data(), sizes.data(),
                     count, direct, replicateConfig.replicaNum,
                     replicateConfig.preferredLocalServiceIDs.data(),
                     replicateConfig.preferredLocalServiceIDs.size(), &out);
        return out;
    }
    int GetIntoLayers(const std::string &key, const std::vector<void *> &buffers,
                      const std::vector<size_t> &sizes, const int32_t direct = 2) override {
        if (buffers.size() != sizes.size()) return MMC_INVALID_PARAM;
        size_t len = key.size(), count = buffers.size();
        int32_t out = MMC_ERROR;
        memcache_get(store_, bytes_of(key), &len, 1, &count, buffers.data(), sizes.data(),
                     count, direct, &out);
        return out;
    }

    int Put(const std::string &key, mmc_buffer &buffer,
            const ReplicateConfig &replicateConfig = {}) override {
        void *addr = nullptr;
        size_t len = 0;
        bool device = false;
        if (!Region(buffer, addr, len, device)) return MMC_INVALID_PARAM;
        return PutFrom(key, addr, len, device ? SMEMB_COPY_L2G : SMEMB_COPY_H2G,
                       replicateConfig);
    }

    mmc_buffer Get(const std::string &key) override {
        // The size first, then the bytes. A key removed and put again with more bytes
        // in between answers -3000 (too small) and is asked again.
        for (int attempt = 0; attempt < 3; ++attempt) {
            KeyInfo info = GetKeyInfo(key);
            if (info.status != MMC_OK || info.size == 0) break;
            uint8_t *bytes = new (std::nothrow) uint8_t[info.size];
            if (bytes == nullptr) break;
            int rc = GetInto(key, bytes, info.size, SMEMB_COPY_G2H);
            if (rc == MMC_OK) return Owned(bytes, info.size);
            delete[] bytes;
            if (rc != MMC_INVALID_PARAM) break;
        }
        return mmc_buffer{};
    }

    int PutBatch(const std::vector<std::string> &keys, std::vector<mmc_buffer> &buffers,
                 const ReplicateConfig &replicateConfig = {}) override {
        if (keys.size() != buffers.size()) return MMC_INVALID_PARAM;
        if (keys.empty()) return MMC_OK;
        std::vector<void *> addrs(keys.size());
        std::vector<size_t> sizes(keys.size());
        bool device = false;
        for (size_t i = 0; i < keys.size(); ++i) {
            bool this_device = false;
            if (!Region(buffers[i], addrs[i], sizes[i], this_device)) return MMC_INVALID_PARAM;
            // One direction per batch: all host or all device memory.
            if (i > 0 && this_device != device) return MMC_INVALID_PARAM;
            device = this_device;
        }
        const int direct = device ? SMEMB_COPY_L2G : SMEMB_COPY_H2G;
        for (int rc : BatchPutFrom(keys, addrs, sizes, direct, replicateConfig))
            if (rc != MMC_OK) return rc;
        return MMC_OK;
    }

    std::vector<mmc_buffer> GetBatch(const std::vector<std::string> &keys) override {
        std::vector<mmc_buffer> out(keys.size(), mmc_buffer{});
        std::vector<KeyInfo> infos = BatchGetKeyInfo(keys);
        std::vector<std::string> found;
        std::vector<void *> bufs;
        std::vector<size_t> sizes, at;
        for (size_t i = 0; i < keys.size() && i < infos.size(); ++i) {
            if (infos[i].status != MMC_OK || infos[i].size == 0) continue;
            uint8_t *bytes = new (std::nothrow) uint8_t[infos[i].size];
            if (bytes == nullptr) continue;
            found.push_back(keys[i]);
            bufs.push_back(bytes);
            sizes.push_back(infos[i].size);
            at.push_back(i);
        }
        if (found.empty()) return out;
        std::vector<int> codes = BatchGetInto(found, bufs, sizes, SMEMB_COPY_G2H);
        for (size_t j = 0; j < found.size(); ++j) {
            uint8_t *bytes = static_cast<uint8_t *>(bufs[j]);
            if (j < codes.size() && codes[j] == MMC_OK) {
                out[at[j]] = Owned(bytes, sizes[j]);
            } else {
                delete[] bytes;
                // Removed since (a miss again), or put again with more bytes.
                if (j < codes.size() && codes[j] == MMC_INVALID_PARAM) out[at[j]] = Get(found[j]);
            }
        }
        return out;
    }

    int Remove(const std::string &key) override {
        size_t len = key.size();
        int32_t out = MMC_ERROR;
        memcache_remove(store_, bytes_of(key), &len, 1, &out);
        return out;
    }
    int IsExist(const std::string &key) override {
        size_t len = key.size();
        int32_t out = MMC_ERROR;
        memcache_exist(store_, bytes_of(key), &len, 1, &out);
        return out;
    }
    KeyInfo GetKeyInfo(const std::string &key) override {
        return BatchGetKeyInfo(std::vector<std::string>{key})[0];
    }

    std::vector<int> BatchGetInto(const std::vector<std::string> &keys,
                                  const std::vector<void *> &buffers,
                                  const std::vector<size_t> &sizes,
                                  const int32_t direct = 2) override {
        if (buffers.size() != keys.size() || sizes.size() != keys.size())
            return std::vector<int>(keys.size(), MMC_INVALID_PARAM);
        Keys k(keys);
        std::vector<size_t> counts(keys.size(), 1);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_get(store_, k.bytes.data(), k.lens.data(), keys.size(), counts.data(),
                     buffers.data(), sizes.data(), buffers.size(), direct, out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    std::vector<int> BatchPutFrom(const std::vector<std::string> &keys,
                                  const std::vector<void *> &buffers,
                                  const std::vector<size_t> &sizes, const int32_t direct = 3,
                                  const ReplicateConfig &replicateConfig = {}) override {
        if (buffers.size() != keys.size() || sizes.size() != keys.size())
            return std::vector<int>(keys.size(), MMC_INVALID_PARAM);
        Keys k(keys);
        std::vector<size_t> counts(keys.size(), 1);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_put(store_, k.bytes.data(), k.lens.data(), keys.size(), counts.data(),
                     buffers.data(), sizes.data(), buffers.size(), direct,
                     replicateConfig.replicaNum,
                     replicateConfig.preferredLocalServiceIDs.data(),
                     replicateConfig.preferredLocalServiceIDs.size(), out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    std::vector<int> BatchRemove(const std::vector<std::string> &keys) override {
        Keys k(keys);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_remove(store_, k.bytes.data(), k.lens.data(), keys.size(), out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    std::vector<int> BatchIsExist(const std::vector<std::string> &keys) override {
        Keys k(keys);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_exist(store_, k.bytes.data(), k.lens.data(), keys.size(), out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    std::vector<KeyInfo> BatchGetKeyInfo(const std::vector<std::string> &keys) override {
        Keys k(keys);
        std::vector<memcache_key_info_t> raw(keys.size());
        memcache_key_info(store_, k.bytes.data(), k.lens.data(), keys.size(), raw.data());
        std::vector<KeyInfo> infos(keys.size());
        for (size_t i = 0; i < keys.size(); ++i) {
            infos[i].key = keys[i];
            infos[i].size = raw[i].size;
            infos[i].deviceId = raw[i].device_id;
            infos[i].status = raw[i].status;
            infos[i].locList.assign(raw[i].services, raw[i].services + raw[i].locations);
            infos[i].typeList.assign(raw[i].media, raw[i].media + raw[i].locations);
            infos[i].gvaList.assign(raw[i].gvas, raw[i].gvas + raw[i].locations);
        }
        return infos;
    }

    std::vector<int> BatchPutFromLayers(const std::vector<std::string> &keys,
                                        const std::vector<std::vector<void *>> &buffers,
                                        const std::vector<std::vector<size_t>> &sizes,
                                        const int32_t direct = 3,
                                        const ReplicateConfig &replicateConfig = {}) override {
        std::vector<size_t> counts;
        std::vector<void *> flat;
        std::vector<size_t> flat_sizes;
        if (!Flatten(keys, buffers, sizes, counts, flat, flat_sizes))
            return std::vector<int>(keys.size(), MMC_INVALID_PARAM);
        Keys k(keys);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_put(store_, k.bytes.data(), k.lens.data(), keys.size(), counts.data(),
                     flat.data(), flat_sizes.data(), flat.size(), direct,
                     replicateConfig.replicaNum,
                     replicateConfig.preferredLocalServiceIDs.data(),
                     replicateConfig.preferredLocalServiceIDs.size(), out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    std::vector<int> BatchGetIntoLayers(const std::vector<std::string> &keys,
                                        const std::vector<std::vector<void *>> &buffers,
                                        const std::vector<std::vector<size_t>> &sizes,
                                        const int32_t direct = 2) override {
        std::vector<size_t> counts;
        std::vector<void *> flat;
        std::vector<size_t> flat_sizes;
        if (!Flatten(keys, buffers, sizes, counts, flat, flat_sizes))
            return std::vector<int>(keys.size(), MMC_INVALID_PARAM);
        Keys k(keys);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_get(store_, k.bytes.data(), k.lens.data(), keys.size(), counts.data(),
                     flat.data(), flat_sizes.data(), flat.size(), direct, out.data());
        return std::vector<int>(out.begin(), out.end());
    }

    int GetLocalServiceId(uint32_t &localServiceId) override {
        return memcache_local_service_id(store_, &localServiceId);
    }

    std::vector<uint64_t> BatchMalloc(const std::vector<std::string> &keys,
                                      const std::vector<uint64_t> &sizes,
                                      uint16_t media = MEDIA_DRAM,
                                      uint64_t leaseTtlMs = 0) override {
        Keys k(keys);
        std::vector<int64_t> out(keys.size(), MMC_ERROR);
        memcache_batch_alloc(store_, k.bytes.data(), k.lens.data(), keys.size(), sizes.data(),
                             sizes.size(), media, leaseTtlMs, out.data());
        return std::vector<uint64_t>(out.begin(), out.end());
    }
    int BatchCopy(std::vector<void *> &gvas, std::vector<void *> &bufs,
                  std::vector<uint64_t> &sizes, int direct, uint32_t flag = 0) override {
        (void)flag;
        if (bufs.size() != gvas.size() || sizes.size() != gvas.size()) return MMC_INVALID_PARAM;
        std::vector<uint64_t> addrs(gvas.size());
        std::vector<size_t> lens(gvas.size());
        for (size_t i = 0; i < gvas.size(); ++i) {
            addrs[i] = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(gvas[i]));
            lens[i] = static_cast<size_t>(sizes[i]);
        }
        return memcache_batch_copy(store_, addrs.data(), bufs.data(), lens.data(), gvas.size(),
                                   direct);
    }
    std::vector<int> BatchWriteFinish(const std::vector<std::string> &keys,
                                      const std::vector<int> &results) override {
        Keys k(keys);
        std::vector<int32_t> res(results.begin(), results.end());
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_batch_write_finish(store_, k.bytes.data(), k.lens.data(), keys.size(),
                                    res.data(), res.size(), out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    std::vector<int> BatchAddLease(const std::vector<std::string> &keys,
                                   uint64_t ttlMs = 0) override {
        Keys k(keys);
        std::vector<int32_t> out(keys.size(), MMC_ERROR);
        memcache_batch_add_lease(store_, k.bytes.data(), k.lens.data(), keys.size(), ttlMs,
                                 out.data());
        return std::vector<int>(out.begin(), out.end());
    }
    int BatchRemoveLease(const std::vector<std::string> &keys) override {
        Keys k(keys);
        return memcache_batch_remove_lease(store_, k.bytes.data(), k.lens.data(), keys.size());
    }
    int PrefetchKeys(std::vector<std::string> keys, uint8_t srcMedia = MEDIA_SSD,
                     uint8_t dstMedia = MEDIA_DRAM, uint32_t flags = 0) override {
        (void)flags;
        Keys k(keys);
        return memcache_tier_move(store_, k.bytes.data(), k.lens.data(), keys.size(), srcMedia,
                                  dstMedia, 1);
    }
    int EvictKeys(std::vector<std::string> keys, uint8_t srcMedia = MEDIA_DRAM,
                  uint8_t dstMedia = MEDIA_SSD, uint32_t flags = 0) override {
        (void)flags;
        Keys k(keys);
        return memcache_tier_move(store_, k.bytes.data(), k.lens.data(), keys.size(), srcMedia,
                                  dstMedia, 0);
    }
    int RemoveAll() override { return memcache_remove_all(store_); }

private:
    // The bytes of an mmc_buffer, and whether they are device memory (type 1; 0 is
    // host memory); false for another type, a null address or an address that wraps.
    static bool Region(const mmc_buffer &b, void *&addr, size_t &len, bool &device) {
        if (b.type > 1 || b.addr == 0 || b.addr + b.offset < b.addr) return false;
        addr = reinterpret_cast<void *>(static_cast<uintptr_t>(b.addr + b.offset));
        len = static_cast<size_t>(b.len);
        device = b.type == 1;
        return true;
    }

    static mmc_buffer Owned(uint8_t *bytes, uint64_t len) {
        mmc_buffer b{};
        b.addr = reinterpret_cast<uintptr_t>(bytes);
        b.len = len;
        return b;
    }

    static bool Flatten(const std::vector<std::string> &keys,
                        const std::vector<std::vector<void *>> &buffers,
                        const std::vector<std::vector<size_t>> &sizes,
                        std::vector<size_t> &counts, std::vector<void *> &flat,
                        std::vector<size_t> &flat_sizes) {
        if (buffers.size() != keys.size() || sizes.size() != keys.size()) return false;
        counts.reserve(keys.size());
        for (size_t i = 0; i < keys.size(); ++i) {
            if (buffers[i].size() != sizes[i].size()) return false;
            counts.push_back(buffers[i].size());
            flat.insert(flat.end(), buffers[i].begin(), buffers[i].end());
            flat_sizes.insert(flat_sizes.end(), sizes[i].begin(), sizes[i].end());
        }
        return true;
    }

    memcache_store *store_;
};

}  // namespace detail

inline std::shared_ptr<ObjectStore> ObjectStore::CreateObjectStore() {
    memcache_store *store = memcache_store_new();
    if (store == nullptr) return nullptr;
    return std::make_shared<detail::RustObjectStore>(store);
}

}  // namespace memcache

#endif
