// The ObjectStore behind CreateObjectStore(), compiled in the caller's translation unit
// on purpose (see object_store.h). It only reshapes arguments; the work is in the library.
#ifndef MEMCACHE_DETAIL_OBJECT_STORE_IMPL_H
#define MEMCACHE_DETAIL_OBJECT_STORE_IMPL_H

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

private:
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
