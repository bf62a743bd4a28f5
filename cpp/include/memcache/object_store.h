// MemCache Hybrid: the C++ ObjectStore (see shared/spec/cpp_object_store_api.md).
//
// Only standard types appear here. The implementation behind CreateObjectStore() is
// inline (memcache/detail/object_store_impl.h): it turns std::string keys and
// std::vector arguments into pointers and lengths in the caller's own translation
// unit and calls the library's C ABI, so the library works whatever libstdc++ string
// ABI (_GLIBCXX_USE_CXX11_ABI) or exception setting (-fno-exceptions) the caller uses.
#ifndef MEMCACHE_OBJECT_STORE_H
#define MEMCACHE_OBJECT_STORE_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memcache/local_config.h"

namespace memcache {

// Copy directions: "H" the caller's host memory, "L" its device memory, "G" the pool.
constexpr int32_t SMEMB_COPY_L2G = 0;
constexpr int32_t SMEMB_COPY_G2L = 1;
constexpr int32_t SMEMB_COPY_G2H = 2;
constexpr int32_t SMEMB_COPY_H2G = 3;
constexpr int32_t COPY_DEVICE_TO_HOST = SMEMB_COPY_G2H;
constexpr int32_t COPY_HOST_TO_DEVICE = SMEMB_COPY_H2G;

constexpr size_t MAX_BATCH_OP_COUNT = 16384;
constexpr uint32_t MAX_BLOB_COPIES = 8;

// The error codes every call returns (0 is success).
enum ErrorCode : int32_t {
    MMC_OK = 0,
    MMC_ERROR = -1,
    MMC_INVALID_PARAM = -3000,
    MMC_MALLOC_FAILED = -3001,
    MMC_NEW_OBJECT_FAILED = -3002,
    MMC_NOT_STARTED = -3003,
    MMC_TIMEOUT = -3004,
    MMC_REPEAT_CALL = -3005,
    MMC_DUPLICATED_OBJECT = -3006,
    MMC_UNMATCHED_KEY = -3007,  // object does not exist
    MMC_NOT_INITIALIZED = -3008,
    MMC_NET_SEQ_DUP = -3009,
    MMC_NET_SEQ_NOT_FOUND = -3010,
    MMC_ALREADY_NOTIFY = -3011,
    MMC_OUT_OF_CAPACITY = -3013,
    MMC_LINK_NOT_FOUND = -3014,
    MMC_NET_REQ_HANDLE_NOT_FOUND = -3015,
    MMC_OOM = -3016,
    MMC_NOT_CONNECTED_TO_META = -3017,
    MMC_NOT_CONNECTED_TO_LOCAL = -3018,
    MMC_CLIENT_NOT_INIT = -3019,
    MMC_UNMATCHED_STATE = -3101,
    MMC_UNMATCHED_KEY_ERROR = -3102,
    MMC_UNMATCHED_RET = -3103,
    MMC_LEASE_NOT_EXPIRED = -3104,
    MMC_LEASE_EXPIRED = -3106,  // an in-place allocation or read lease has ended
};

// 1.3.0's media numbers (BatchMalloc's media, EvictKeys' / PrefetchKeys' src and dst,
// as Python's): 0 HBM, 1 DRAM, 2 SSD.
constexpr uint16_t MEDIA_HBM = 0;
constexpr uint16_t MEDIA_DRAM = 1;
constexpr uint16_t MEDIA_SSD = 2;
// BatchCopy's direct value that lets each address's grant decide the direction.
constexpr int32_t SMEMB_COPY_AUTO = 9;

// Replica policy of a put: replicaNum 1..8 (0 reads as 1); preferredLocalServiceIDs
// unique, at most replicaNum of them.
struct ReplicateConfig {
    uint32_t replicaNum = 1;
    std::vector<int32_t> preferredLocalServiceIDs;
};

struct KeyInfo {
    std::string key;
    uint64_t size = 0;
    uint32_t deviceId = 0;
    int32_t status = 0;
    std::vector<uint32_t> locList;   // local service of each replica
    std::vector<uint16_t> typeList;  // medium of each replica, 1.3.0's numbers: 0 HBM, 1 DRAM, 2 SSD
    // Pool address of each replica (0 where none): BatchCopy reads it under a read
    // lease (BatchAddLease). Python's KeyInfo.gva_list().
    std::vector<uint64_t> gvaList;
};

// Frees the bytes of a buffer Get or GetBatch returned, and zeroes it.
inline void FreeBuffer(mmc_buffer &buffer) {
    delete[] reinterpret_cast<uint8_t *>(static_cast<uintptr_t>(buffer.addr));
    buffer = mmc_buffer{};
}

class ObjectStore {
public:
    virtual ~ObjectStore() = default;

    // The store of this library; configured from MMC_CLIENT_CONFIG (a TOML file) and
    // MMC_CLIENT_* variables, the embedded pool when no discoveryURL is set.
    static std::shared_ptr<ObjectStore> CreateObjectStore();

    // 1.3.0's configuration without files (memcache/local_config.h), over what
    // MMC_CLIENT_CONFIG / MMC_CLIENT_* say; before Init (-3005 after it, until
    // TearDown). -3000 for what this build cannot honour (TLS, HBM, device protocols).
    virtual int Setup(const local_config &config) = 0;
    virtual int Init(const uint32_t deviceId, bool initBm = true) = 0;
    virtual int TearDown() = 0;

    virtual int RegisterBuffer(void *buffer, size_t size) = 0;
    virtual int UnRegisterBuffer(void *buffer, size_t size) = 0;

    virtual int GetInto(const std::string &key, void *buffer, size_t size,
                        const int32_t direct = 2) = 0;
    // The puts (PutFrom, Put, PutBatch, BatchPutFrom, the layer calls) answer 0 for a
    // key that exists already, as 1.3.0 does: the first value stays.
    virtual int PutFrom(const std::string &key, void *buffer, size_t size,
                        const int32_t direct = 3,
                        const ReplicateConfig &replicateConfig = {}) = 0;
    // 1.3.0's buffer calls. An mmc_buffer is the host bytes at addr + offset, len of
    // them (type 0; device buffers, type 1, answer -3000).
    virtual int Put(const std::string &key, mmc_buffer &buffer,
                    const ReplicateConfig &replicateConfig = {}) = 0;
    // The object's bytes in a buffer this call allocates with new uint8_t[len]: the
    // caller owns it and frees it with delete[] reinterpret_cast<uint8_t *>(buf.addr)
    // (or memcache::FreeBuffer). On a miss or any error, an all-zero mmc_buffer
    // (addr 0, len 0; objects are never empty).
    virtual mmc_buffer Get(const std::string &key) = 0;
    // 0 when every key was stored, else the code of the first key that failed (the
    // others may have been stored). Mismatched sizes or a bad buffer: -3000, nothing
    // stored.
    virtual int PutBatch(const std::vector<std::string> &keys, std::vector<mmc_buffer> &buffers,
                         const ReplicateConfig &replicateConfig = {}) = 0;
    // One buffer per key, as Get.
    virtual std::vector<mmc_buffer> GetBatch(const std::vector<std::string> &keys) = 0;

    virtual int Remove(const std::string &key) = 0;
    // 1 exists, 0 does not, negative error.
    virtual int IsExist(const std::string &key) = 0;
    virtual KeyInfo GetKeyInfo(const std::string &key) = 0;

    virtual std::vector<int> BatchGetInto(const std::vector<std::string> &keys,
                                          const std::vector<void *> &buffers,
                                          const std::vector<size_t> &sizes,
                                          const int32_t direct = 2) = 0;
    virtual std::vector<int> BatchPutFrom(const std::vector<std::string> &keys,
                                          const std::vector<void *> &buffers,
                                          const std::vector<size_t> &sizes,
                                          const int32_t direct = 3,
                                          const ReplicateConfig &replicateConfig = {}) = 0;
    virtual std::vector<int> BatchRemove(const std::vector<std::string> &keys) = 0;
    virtual std::vector<int> BatchIsExist(const std::vector<std::string> &keys) = 0;
    virtual std::vector<KeyInfo> BatchGetKeyInfo(const std::vector<std::string> &keys) = 0;

    virtual int PutFromLayers(const std::string &key, const std::vector<void *> &buffers,
                              const std::vector<size_t> &sizes, const int32_t direct = 3,
                              const ReplicateConfig &replicateConfig = {}) = 0;
    virtual int GetIntoLayers(const std::string &key, const std::vector<void *> &buffers,
                              const std::vector<size_t> &sizes, const int32_t direct = 2) = 0;
    virtual std::vector<int> BatchPutFromLayers(
        const std::vector<std::string> &keys, const std::vector<std::vector<void *>> &buffers,
        const std::vector<std::vector<size_t>> &sizes, const int32_t direct = 3,
        const ReplicateConfig &replicateConfig = {}) = 0;
    virtual std::vector<int> BatchGetIntoLayers(const std::vector<std::string> &keys,
                                                const std::vector<std::vector<void *>> &buffers,
                                                const std::vector<std::vector<size_t>> &sizes,
                                                const int32_t direct = 2) = 0;

    virtual int GetLocalServiceId(uint32_t &localServiceId) = 0;

    // ---- 1.3.0's in-place API (the same answers as Python's batch_alloc, ...) ----

    // Allocates an object of sizes[i] bytes under each key for writing in place; one
    // entry per key: its pool address (positive as int64_t), or the key's negative
    // error code (read it as static_cast<int64_t>(v[i]): -3000 bad input or a media
    // other than MEDIA_DRAM, -3006 the key exists, -3019 before Init). Fill it with
    // BatchCopy (any number of pieces, from any thread), then end with BatchWriteFinish
    // before leaseTtlMs (0: the pool's put lease) has passed.
    virtual std::vector<uint64_t> BatchMalloc(const std::vector<std::string> &keys,
                                              const std::vector<uint64_t> &sizes,
                                              uint16_t media = MEDIA_DRAM,
                                              uint64_t leaseTtlMs = 0) = 0;
    // sizes[i] bytes between bufs[i] and the pool address gvas[i]: into the pool with
    // direct SMEMB_COPY_H2G (an allocation of this client), out of it with
    // SMEMB_COPY_G2H (a replica leased with BatchAddLease, address from
    // KeyInfo::gvaList), either with SMEMB_COPY_AUTO. Every copy is checked before a
    // byte moves: 0, -3102 an address outside them, -3101 the wrong way, -3106 the
    // allocation or lease has ended, -3000 bad buffers, lists of different lengths or
    // a device direction (L2G, G2L: no device runtime). flag: accepted, unused.
    virtual int BatchCopy(std::vector<void *> &gvas, std::vector<void *> &bufs,
                          std::vector<uint64_t> &sizes, int direct, uint32_t flag = 0) = 0;
    // results[i] 0 commits key i (readable by everyone from now on), any other value
    // rolls it back. One code per key: 0, -3000 a key this client is not writing,
    // -3106 (and a rollback) an allocation whose lease has ended.
    virtual std::vector<int> BatchWriteFinish(const std::vector<std::string> &keys,
                                              const std::vector<int> &results) = 0;
    // Read leases for ttlMs (0: the pool's read lease): the objects stay, and their
    // KeyInfo::gvaList addresses can be read with BatchCopy. One code per key: 0,
    // -3007 missing.
    virtual std::vector<int> BatchAddLease(const std::vector<std::string> &keys,
                                           uint64_t ttlMs = 0) = 0;
    // Releases this client's read leases on the keys: 0, or -3000 (nothing released)
    // when a key holds none here.
    virtual int BatchRemoveLease(const std::vector<std::string> &keys) = 0;

    // Media moves, 1.3.0's media numbers. 0, or the first failing key's code.
    // Prefetch: SSD -> DRAM only (-3000 another pair, -3007 missing, -3004 not back
    // in time). Evict: DRAM -> SSD only (-3000 another pair, -3007 missing, -3013 no
    // SSD tier, -3104 held by a reader). flags: accepted, unused.
    virtual int PrefetchKeys(std::vector<std::string> keys, uint8_t srcMedia = MEDIA_SSD,
                             uint8_t dstMedia = MEDIA_DRAM, uint32_t flags = 0) = 0;
    virtual int EvictKeys(std::vector<std::string> keys, uint8_t srcMedia = MEDIA_DRAM,
                          uint8_t dstMedia = MEDIA_SSD, uint32_t flags = 0) = 0;
    // Removes every object no reader holds and no writer is still writing: 0 or a
    // negative code.
    virtual int RemoveAll() = 0;
};

}  // namespace memcache

#include "memcache/detail/object_store_impl.h"

#endif
