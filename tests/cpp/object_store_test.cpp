// The C++ ObjectStore against a real (embedded) pool: every call, and every bad input
// the spec names, answered with its code and no change.
#include <gtest/gtest.h>

#include <cstring>
#include <chrono>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "memcache/object_store.h"
#include "memcache/mmcache.h"  // 1.3.0's mmc_setup(const local_config *)

using memcache::KeyInfo;
using memcache::ObjectStore;
using memcache::ReplicateConfig;

namespace {

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 31 + i * 7);
    return v;
}

class ObjectStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        store = ObjectStore::CreateObjectStore();
        ASSERT_NE(store, nullptr);
        ASSERT_EQ(store->Init(0, true), 0);
    }
    void TearDown() override {
        if (store) store->TearDown();
    }
    std::shared_ptr<ObjectStore> store;
};

TEST_F(ObjectStoreTest, PutFromGetIntoRoundTrip) {
    auto data = Pattern(10000, 1);
    ASSERT_EQ(store->PutFrom("k1", data.data(), data.size()), 0);
    std::vector<uint8_t> out(data.size(), 0);
    ASSERT_EQ(store->GetInto("k1", out.data(), out.size()), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(store->IsExist("k1"), 1);
    EXPECT_EQ(store->IsExist("nope"), 0);
    KeyInfo info = store->GetKeyInfo("k1");
    EXPECT_EQ(info.status, 0);
    EXPECT_EQ(info.size, data.size());
    EXPECT_EQ(info.key, "k1");
    ASSERT_EQ(info.locList.size(), 1u);
    uint32_t id = 99;
    ASSERT_EQ(store->GetLocalServiceId(id), 0);
    EXPECT_EQ(info.locList[0], id);
    // As 1.3.0: a put of an existing key answers 0 and the first value stays.
    auto other = Pattern(10000, 2);
    EXPECT_EQ(store->PutFrom("k1", other.data(), other.size()), 0);
    ASSERT_EQ(store->GetInto("k1", out.data(), out.size()), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(store->Remove("k1"), 0);
    EXPECT_EQ(store->Remove("k1"), memcache::MMC_UNMATCHED_KEY);
    EXPECT_EQ(store->GetInto("k1", out.data(), out.size()), memcache::MMC_UNMATCHED_KEY);
    EXPECT_EQ(store->GetKeyInfo("k1").status, memcache::MMC_UNMATCHED_KEY);
}

TEST_F(ObjectStoreTest, LayersRoundTrip) {
    std::vector<std::vector<uint8_t>> layers;
    for (int i = 0; i < 61; ++i) {
        layers.push_back(Pattern(128 << 10, static_cast<uint8_t>(2 * i)));
        layers.push_back(Pattern(16 << 10, static_cast<uint8_t>(2 * i + 1)));
    }
    std::vector<void *> bufs;
    std::vector<size_t> sizes;
    for (auto &l : layers) {
        bufs.push_back(l.data());
        sizes.push_back(l.size());
    }
    ASSERT_EQ(store->PutFromLayers("block", bufs, sizes), 0);
    std::vector<std::vector<uint8_t>> out;
    std::vector<void *> outs;
    for (auto &l : layers) out.emplace_back(l.size(), 0);
    for (auto &o : out) outs.push_back(o.data());
    ASSERT_EQ(store->GetIntoLayers("block", outs, sizes), 0);
    EXPECT_EQ(out, layers);
    EXPECT_EQ(store->GetKeyInfo("block").size, 61u * (144u << 10));
}

TEST_F(ObjectStoreTest, BatchCalls) {
    std::vector<std::string> keys;
    std::vector<std::vector<uint8_t>> data;
    std::vector<void *> bufs;
    std::vector<size_t> sizes;
    for (int i = 0; i < 8; ++i) {
        keys.push_back("b" + std::to_string(i));
        data.push_back(Pattern(4096 + i, static_cast<uint8_t>(i)));
    }
    for (auto &d : data) {
        bufs.push_back(d.data());
        sizes.push_back(d.size());
    }
    EXPECT_EQ(store->BatchPutFrom(keys, bufs, sizes), std::vector<int>(8, 0));
    EXPECT_EQ(store->BatchIsExist(keys), std::vector<int>(8, 1));
    std::vector<std::vector<uint8_t>> out;
    std::vector<void *> outs;
    for (auto &d : data) out.emplace_back(d.size(), 0);
    for (auto &o : out) outs.push_back(o.data());
    EXPECT_EQ(store->BatchGetInto(keys, outs, sizes), std::vector<int>(8, 0));
    EXPECT_EQ(out, data);
    auto infos = store->BatchGetKeyInfo(keys);
    ASSERT_EQ(infos.size(), 8u);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(infos[i].size, 4096u + i);

    // Batch layers: two keys of three layers each.
    std::vector<std::string> lk = {"L0", "L1"};
    std::vector<std::vector<void *>> lb = {{bufs[0], bufs[1], bufs[2]}, {bufs[3], bufs[4], bufs[5]}};
    std::vector<std::vector<size_t>> ls = {{sizes[0], sizes[1], sizes[2]}, {sizes[3], sizes[4], sizes[5]}};
    EXPECT_EQ(store->BatchPutFromLayers(lk, lb, ls), std::vector<int>(2, 0));
    std::vector<std::vector<void *>> lo = {{outs[0], outs[1], outs[2]}, {outs[3], outs[4], outs[5]}};
    for (auto &o : out) std::fill(o.begin(), o.end(), 0);
    EXPECT_EQ(store->BatchGetIntoLayers(lk, lo, ls), std::vector<int>(2, 0));
    for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], data[i]);

    // One bad key does not hide the others.
    std::vector<std::string> mixed = {"b0", std::string(256, 'x'), "missing"};
    EXPECT_EQ(store->BatchIsExist(mixed), (std::vector<int>{1, memcache::MMC_INVALID_PARAM, 0}));
    EXPECT_EQ(store->BatchRemove(keys), std::vector<int>(8, 0));
    EXPECT_EQ(store->BatchIsExist(keys), std::vector<int>(8, 0));
}

TEST_F(ObjectStoreTest, BadInputIsRefusedAndChangesNothing) {
    auto data = Pattern(100, 9);
    const std::string long_key(256, 'k');
    EXPECT_EQ(store->PutFrom(long_key, data.data(), data.size()), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->IsExist(std::string(255, 'k')), 0);
    EXPECT_EQ(store->PutFrom("", data.data(), data.size()), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->PutFrom("null", nullptr, 100), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->PutFrom("zero", data.data(), 0), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->IsExist("null"), 0);
    EXPECT_EQ(store->IsExist("zero"), 0);
    EXPECT_EQ(store->PutFrom("dir", data.data(), data.size(), memcache::SMEMB_COPY_G2H),
              memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->PutFrom("dir", data.data(), data.size(), 7), memcache::MMC_INVALID_PARAM);
    ReplicateConfig nine;
    nine.replicaNum = 9;
    EXPECT_EQ(store->PutFrom("nine", data.data(), data.size(), 3, nine),
              memcache::MMC_INVALID_PARAM);

    ASSERT_EQ(store->PutFrom("small", data.data(), data.size()), 0);
    std::vector<uint8_t> tiny(10, 0xEE);
    EXPECT_EQ(store->GetInto("small", tiny.data(), tiny.size()), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(tiny, std::vector<uint8_t>(10, 0xEE));
    EXPECT_EQ(store->GetInto("small", nullptr, 100), memcache::MMC_INVALID_PARAM);

    std::vector<std::string> two = {"a", "b"};
    std::vector<void *> one_buf = {data.data()};
    std::vector<size_t> one_size = {data.size()};
    EXPECT_EQ(store->BatchPutFrom(two, one_buf, one_size), std::vector<int>(2, memcache::MMC_INVALID_PARAM));
    EXPECT_EQ(store->BatchGetInto(two, one_buf, one_size), std::vector<int>(2, memcache::MMC_INVALID_PARAM));
    EXPECT_EQ(store->PutFromLayers("l", {data.data()}, {1, 2}), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->IsExist("a"), 0);

    std::vector<std::string> many(16385, "k");
    for (size_t i = 0; i < many.size(); ++i) many[i] += std::to_string(i);
    // Above the wire limit: split by the client, one answer per key.
    auto codes = store->BatchIsExist(many);
    ASSERT_EQ(codes.size(), many.size());
    EXPECT_EQ(codes[0], 0);
    EXPECT_EQ(codes.back(), 0);
}

TEST(ObjectStoreLifecycle, CallsBeforeInitAndAfterTearDown) {
    auto store = ObjectStore::CreateObjectStore();
    ASSERT_NE(store, nullptr);
    uint8_t b[8] = {1};
    EXPECT_EQ(store->PutFrom("k", b, sizeof b), memcache::MMC_CLIENT_NOT_INIT);
    EXPECT_EQ(store->GetInto("k", b, sizeof b), memcache::MMC_CLIENT_NOT_INIT);
    EXPECT_EQ(store->IsExist("k"), memcache::MMC_CLIENT_NOT_INIT);
    EXPECT_EQ(store->TearDown(), memcache::MMC_CLIENT_NOT_INIT);
    uint32_t id = 0;
    EXPECT_EQ(store->GetLocalServiceId(id), memcache::MMC_CLIENT_NOT_INIT);
    ASSERT_EQ(store->Init(0, true), 0);
    EXPECT_EQ(store->Init(0, true), memcache::MMC_REPEAT_CALL);
    EXPECT_EQ(store->RegisterBuffer(b, sizeof b), 0);
    EXPECT_EQ(store->RegisterBuffer(nullptr, 8), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->UnRegisterBuffer(b, sizeof b), 0);
    ASSERT_EQ(store->TearDown(), 0);
    EXPECT_EQ(store->PutFrom("k", b, sizeof b), memcache::MMC_CLIENT_NOT_INIT);
    EXPECT_EQ(store->BatchRemove({"k", "j"}), std::vector<int>(2, memcache::MMC_CLIENT_NOT_INIT));
    EXPECT_EQ(store->GetKeyInfo("k").status, memcache::MMC_CLIENT_NOT_INIT);
}

TEST(ObjectStoreLifecycle, PureClientSeesWhatAServiceClientStored) {
    auto owner = ObjectStore::CreateObjectStore();
    auto reader = ObjectStore::CreateObjectStore();
    ASSERT_EQ(owner->Init(0, true), 0);
    ASSERT_EQ(reader->Init(1, false), 0);
    uint32_t id = 0;
    EXPECT_EQ(reader->GetLocalServiceId(id), memcache::MMC_NOT_CONNECTED_TO_LOCAL);
    auto data = Pattern(5000, 5);
    ASSERT_EQ(owner->PutFrom("shared", data.data(), data.size()), 0);
    std::vector<uint8_t> out(data.size());
    ASSERT_EQ(reader->GetInto("shared", out.data(), out.size()), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(reader->TearDown(), 0);
    EXPECT_EQ(owner->TearDown(), 0);
}

// ---- 1.3.0's Setup and buffer calls ----

mmc_buffer HostBuf(void *p, size_t n, uint64_t offset = 0) {
    mmc_buffer b{};
    b.addr = reinterpret_cast<uintptr_t>(p);
    b.offset = offset;
    b.len = n;
    return b;
}

std::vector<uint8_t> BytesOf(const mmc_buffer &b) {
    const uint8_t *p = reinterpret_cast<const uint8_t *>(static_cast<uintptr_t>(b.addr));
    return std::vector<uint8_t>(p, p + b.len);
}

// A local_config of the embedded pool with 64 MiB of DRAM.
local_config Embedded() {
    local_config c;
    c.meta_service_url = "";
    c.dram_size = "64MB";
    c.protocol = "host_shm";
    c.log_level = "warn";
    return c;
}

TEST(ObjectStoreSetup, ConfiguresBeforeInitOnly) {
    auto store = ObjectStore::CreateObjectStore();
    ASSERT_NE(store, nullptr);
    ASSERT_EQ(store->Setup(Embedded()), 0);
    ASSERT_EQ(store->Setup(Embedded()), 0);  // again before Init: replaces
    ASSERT_EQ(store->Init(0, true), 0);
    EXPECT_EQ(store->Setup(Embedded()), memcache::MMC_REPEAT_CALL);
    auto data = Pattern(3000, 9);
    ASSERT_EQ(store->PutFrom("setup/1", data.data(), data.size()), 0);
    ASSERT_EQ(store->TearDown(), 0);
    EXPECT_EQ(store->Setup(Embedded()), 0);  // after TearDown: allowed again
}

TEST(ObjectStoreSetup, TakesEffectAtInit) {
    // A meta service where nothing listens: Init fails, so Setup's URL was used.
    auto store = ObjectStore::CreateObjectStore();
    local_config c = Embedded();
    c.meta_service_url = "tcp://127.0.0.1:1";
    c.client_timeout_seconds = 1;
    ASSERT_EQ(store->Setup(c), 0);
    EXPECT_NE(store->Init(0, false), 0);
    // Set up again for the embedded pool: the store works.
    ASSERT_EQ(store->Setup(Embedded()), 0);
    ASSERT_EQ(store->Init(0, true), 0);
    EXPECT_EQ(store->IsExist("setup/none"), 0);
    EXPECT_EQ(store->TearDown(), 0);
}

TEST(ObjectStoreSetup, RefusesWhatItCannotHonour) {
    auto store = ObjectStore::CreateObjectStore();
    auto refused = [&](void (*change)(local_config &)) {
        local_config c = Embedded();
        change(c);
        return store->Setup(c);
    };
    EXPECT_EQ(refused([](local_config &c) { c.tls_enable = true; }), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(refused([](local_config &c) { c.hcom_tls_enable = true; }),
              memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(refused([](local_config &c) { c.hbm_size = "1.5GB"; }), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(refused([](local_config &c) { c.protocol = "device_rdma"; }),
              memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(refused([](local_config &c) { c.dram_size = "lots"; }),
              memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(refused([](local_config &c) { c.log_level = "loud"; }),
              memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(refused([](local_config &c) { c.meta_service_url = std::string(2000, 'u'); }),
              memcache::MMC_INVALID_PARAM);
    // Defaults of 1.3.0 are accepted (they name a remote pool; nothing is started).
    local_config defaults = create_default_local_config();
    defaults.log_level = "warn";
    EXPECT_EQ(store->Setup(defaults), 0);
    EXPECT_EQ(mmc_setup(static_cast<const local_config *>(nullptr)), memcache::MMC_INVALID_PARAM);
}

TEST_F(ObjectStoreTest, PutAndGetBuffers) {
    auto data = Pattern(12345, 3);
    mmc_buffer in = HostBuf(data.data(), data.size());
    ASSERT_EQ(store->Put("buf/1", in), 0);
    EXPECT_EQ(store->Put("buf/1", in), 0);  // exists: 0, the first value stays
    mmc_buffer out = store->Get("buf/1");
    ASSERT_NE(out.addr, 0u);
    EXPECT_EQ(out.type, 0u);
    EXPECT_EQ(out.offset, 0u);
    EXPECT_EQ(BytesOf(out), data);
    memcache::FreeBuffer(out);
    EXPECT_EQ(out.addr, 0u);
    EXPECT_EQ(out.len, 0u);

    // addr + offset, len bytes.
    mmc_buffer part = HostBuf(data.data(), 100, 1000);
    ASSERT_EQ(store->Put("buf/part", part, ReplicateConfig{}), 0);
    mmc_buffer got = store->Get("buf/part");
    EXPECT_EQ(BytesOf(got), std::vector<uint8_t>(data.begin() + 1000, data.begin() + 1100));
    delete[] reinterpret_cast<uint8_t *>(static_cast<uintptr_t>(got.addr));

    mmc_buffer missing = store->Get("buf/none");
    EXPECT_EQ(missing.addr, 0u);
    EXPECT_EQ(missing.len, 0u);
}

TEST_F(ObjectStoreTest, PutBufferRefusesBadInput) {
    uint8_t b[16] = {7};
    mmc_buffer device = HostBuf(b, sizeof b);
    device.type = 1;
    EXPECT_EQ(store->Put("bad", device), memcache::MMC_INVALID_PARAM);
    mmc_buffer null_buf = HostBuf(nullptr, 16);
    EXPECT_EQ(store->Put("bad", null_buf), memcache::MMC_INVALID_PARAM);
    mmc_buffer empty = HostBuf(b, 0);
    EXPECT_EQ(store->Put("bad", empty), memcache::MMC_INVALID_PARAM);
    mmc_buffer wraps = HostBuf(b, 16, UINT64_MAX);
    EXPECT_EQ(store->Put("bad", wraps), memcache::MMC_INVALID_PARAM);
    mmc_buffer ok = HostBuf(b, sizeof b);
    EXPECT_EQ(store->Put("", ok), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->Put(std::string(256, 'k'), ok), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->IsExist("bad"), 0);
    EXPECT_EQ(store->Get("").addr, 0u);
}

TEST_F(ObjectStoreTest, PutBatchAndGetBatch) {
    std::vector<std::vector<uint8_t>> data = {Pattern(100, 1), Pattern(70000, 2), Pattern(1, 3)};
    std::vector<std::string> keys = {"pb/0", "pb/1", "pb/2"};
    std::vector<mmc_buffer> bufs;
    for (auto &d : data) bufs.push_back(HostBuf(d.data(), d.size()));
    ASSERT_EQ(store->PutBatch(keys, bufs), 0);

    auto got = store->GetBatch({"pb/2", "pb/none", "pb/0", "pb/1"});
    ASSERT_EQ(got.size(), 4u);
    EXPECT_EQ(BytesOf(got[0]), data[2]);
    EXPECT_EQ(got[1].addr, 0u);
    EXPECT_EQ(got[1].len, 0u);
    EXPECT_EQ(BytesOf(got[2]), data[0]);
    EXPECT_EQ(BytesOf(got[3]), data[1]);
    for (auto &g : got) memcache::FreeBuffer(g);

    // One key already stored: 0 for it (its first value stays); the others are stored.
    std::vector<mmc_buffer> two = {bufs[0], bufs[1]};
    EXPECT_EQ(store->PutBatch({"pb/new", "pb/1"}, two), 0);
    EXPECT_EQ(store->IsExist("pb/new"), 1);

    // Bad shapes and buffers: -3000 and nothing stored.
    EXPECT_EQ(store->PutBatch({"pb/x"}, two), memcache::MMC_INVALID_PARAM);
    std::vector<mmc_buffer> one_bad = {bufs[0], HostBuf(nullptr, 8)};
    EXPECT_EQ(store->PutBatch({"pb/y", "pb/z"}, one_bad), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->BatchIsExist({"pb/x", "pb/y", "pb/z"}), std::vector<int>(3, 0));
    std::vector<mmc_buffer> none;
    EXPECT_EQ(store->PutBatch({}, none), 0);
    EXPECT_TRUE(store->GetBatch({}).empty());
}

TEST(ObjectStoreLifecycle, BufferCallsBeforeInit) {
    auto store = ObjectStore::CreateObjectStore();
    uint8_t b[8] = {1};
    mmc_buffer in = HostBuf(b, sizeof b);
    EXPECT_EQ(store->Put("k", in), memcache::MMC_CLIENT_NOT_INIT);
    EXPECT_EQ(store->Get("k").addr, 0u);
    std::vector<mmc_buffer> bufs = {in};
    EXPECT_EQ(store->PutBatch({"k"}, bufs), memcache::MMC_CLIENT_NOT_INIT);
    auto got = store->GetBatch({"k", "j"});
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].addr, 0u);
    EXPECT_EQ(got[1].len, 0u);
}

// ---- 1.3.0's in-place API ----

void *Gva(uint64_t g, uint64_t plus = 0) {
    return reinterpret_cast<void *>(static_cast<uintptr_t>(g + plus));
}

TEST_F(ObjectStoreTest, InPlaceWriteCommitLeaseRead) {
    const size_t n = 64 << 10, half = n / 2;
    auto data = Pattern(n, 4);
    auto gvas = store->BatchMalloc({"ip/a", "ip/b"}, {n, 4096}, memcache::MEDIA_DRAM, 0);
    ASSERT_EQ(gvas.size(), 2u);
    ASSERT_GT(static_cast<int64_t>(gvas[0]), 0);
    ASSERT_GT(static_cast<int64_t>(gvas[1]), 0);

    // Two pieces of the first object from two threads.
    int rc[2] = {-1, -1};
    std::vector<std::thread> writers;
    for (int t = 0; t < 2; ++t) {
        writers.emplace_back([&, t] {
            std::vector<void *> g = {Gva(gvas[0], t * half)};
            std::vector<void *> b = {data.data() + t * half};
            std::vector<uint64_t> sz = {half};
            rc[t] = store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_H2G);
        });
    }
    for (auto &w : writers) w.join();
    EXPECT_EQ(rc[0], 0);
    EXPECT_EQ(rc[1], 0);
    EXPECT_EQ(store->BatchWriteFinish({"ip/a", "ip/b"}, {0, 1}), (std::vector<int>{0, 0}));
    std::vector<uint8_t> out(n, 0);
    ASSERT_EQ(store->GetInto("ip/a", out.data(), out.size()), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(store->IsExist("ip/b"), 0);
    // Finishing a stored key again is done (as in 1.3.0); a key never written is not.
    EXPECT_EQ(store->BatchWriteFinish({"ip/a"}, {0}), std::vector<int>{0});
    EXPECT_EQ(store->BatchWriteFinish({"ip/b"}, {0}), std::vector<int>{memcache::MMC_INVALID_PARAM});

    // Lease, read in place at the address key info gives, release.
    EXPECT_EQ(store->BatchAddLease({"ip/a"}, 0), std::vector<int>{0});
    KeyInfo info = store->GetKeyInfo("ip/a");
    ASSERT_EQ(info.status, 0);
    ASSERT_EQ(info.gvaList.size(), 1u);
    EXPECT_EQ(info.typeList, std::vector<uint16_t>{memcache::MEDIA_DRAM});  // as Python's
    ASSERT_GT(info.gvaList[0], 0u);
    std::fill(out.begin(), out.end(), 0);
    std::vector<void *> g = {Gva(info.gvaList[0])};
    std::vector<void *> b = {out.data()};
    std::vector<uint64_t> sz = {n};
    ASSERT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_G2H), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_AUTO), 0);
    EXPECT_EQ(store->BatchRemoveLease({"ip/a"}), 0);
    EXPECT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_G2H),
              memcache::MMC_UNMATCHED_KEY_ERROR);
    EXPECT_EQ(store->BatchRemoveLease({"ip/a"}), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->BatchAddLease({"ip/none"}), std::vector<int>{memcache::MMC_UNMATCHED_KEY});

    // The first value stays: an existing key cannot be allocated.
    auto again = store->BatchMalloc({"ip/a"}, {n});
    EXPECT_EQ(static_cast<int64_t>(again[0]), memcache::MMC_DUPLICATED_OBJECT);
}

TEST_F(ObjectStoreTest, InPlaceWriterPastItsLease) {
    auto data = Pattern(4096, 6);
    auto gvas = store->BatchMalloc({"ip/late"}, {data.size()}, memcache::MEDIA_DRAM, 50);
    ASSERT_GT(static_cast<int64_t>(gvas[0]), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<void *> g = {Gva(gvas[0])};
    std::vector<void *> b = {data.data()};
    std::vector<uint64_t> sz = {data.size()};
    EXPECT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_H2G), memcache::MMC_LEASE_EXPIRED);
    EXPECT_EQ(store->BatchWriteFinish({"ip/late"}, {0}), std::vector<int>{memcache::MMC_LEASE_EXPIRED});
    EXPECT_EQ(store->IsExist("ip/late"), 0);
}

TEST_F(ObjectStoreTest, InPlaceRefusals) {
    auto data = Pattern(4096, 7);
    auto gvas = store->BatchMalloc({"ip/r"}, {data.size()});
    ASSERT_GT(static_cast<int64_t>(gvas[0]), 0);
    std::vector<void *> g = {Gva(gvas[0])};
    std::vector<void *> b = {data.data()};
    std::vector<uint64_t> sz = {data.size()};
    // Device directions: no device runtime.
    EXPECT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_L2G), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_G2L), memcache::MMC_INVALID_PARAM);
    // Reading an allocation being written: the wrong way.
    EXPECT_EQ(store->BatchCopy(g, b, sz, memcache::SMEMB_COPY_G2H), memcache::MMC_UNMATCHED_STATE);
    std::vector<uint64_t> two = {1, 2};
    EXPECT_EQ(store->BatchCopy(g, b, two, memcache::SMEMB_COPY_H2G), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->BatchWriteFinish({"ip/r"}, {1}), std::vector<int>{0});
    auto bad = store->BatchMalloc({"ip/hbm", "ip/zero"}, {100, 0}, memcache::MEDIA_HBM);
    EXPECT_EQ(static_cast<int64_t>(bad[0]), memcache::MMC_INVALID_PARAM);
    auto zero = store->BatchMalloc({"ip/zero"}, {0});
    EXPECT_EQ(static_cast<int64_t>(zero[0]), memcache::MMC_INVALID_PARAM);
    auto mismatched = store->BatchMalloc({"ip/x", "ip/y"}, {100});
    EXPECT_EQ(static_cast<int64_t>(mismatched[1]), memcache::MMC_INVALID_PARAM);
}

TEST_F(ObjectStoreTest, RemoveAllEvictPrefetch) {
    auto data = Pattern(3000, 8);
    ASSERT_EQ(store->PutFrom("ra/1", data.data(), data.size()), 0);
    ASSERT_EQ(store->PutFrom("ra/2", data.data(), data.size()), 0);
    // No SSD tier in this pool.
    EXPECT_EQ(store->EvictKeys({"ra/1"}), memcache::MMC_OUT_OF_CAPACITY);
    EXPECT_EQ(store->EvictKeys({"ra/1"}, memcache::MEDIA_SSD, memcache::MEDIA_DRAM),
              memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->EvictKeys({"ra/1"}, 1, 7), memcache::MMC_INVALID_PARAM);
    EXPECT_EQ(store->PrefetchKeys({"ra/1"}), 0);  // in DRAM already
    EXPECT_EQ(store->PrefetchKeys({"ra/none"}), memcache::MMC_UNMATCHED_KEY);
    EXPECT_EQ(store->RemoveAll(), 0);
    EXPECT_EQ(store->BatchIsExist({"ra/1", "ra/2"}), std::vector<int>(2, 0));
}

// The library's ABI under the ObjectStore (detail/abi.h): an array may be null when its
// count is 0; a null one with a count above 0, or key lengths whose sum overflows, are
// refused with -3000 in the answer and in every result slot.
TEST(ObjectStoreAbi, NullArraysOfCountZeroAndArraysThatDoNotMatch) {
    memcache_store *s = memcache_store_new();
    ASSERT_NE(s, nullptr);
    ASSERT_EQ(memcache_init(s, 0, 1), 0);
    EXPECT_EQ(memcache_put(s, nullptr, nullptr, 0, nullptr, nullptr, nullptr, 0, 3, 1, nullptr,
                           0, nullptr),
              0);
    EXPECT_EQ(memcache_get(s, nullptr, nullptr, 0, nullptr, nullptr, nullptr, 0, 2, nullptr), 0);
    EXPECT_EQ(memcache_remove(s, nullptr, nullptr, 0, nullptr), 0);
    EXPECT_EQ(memcache_exist(s, nullptr, nullptr, 0, nullptr), 0);
    EXPECT_EQ(memcache_key_info(s, nullptr, nullptr, 0, nullptr), 0);
    EXPECT_EQ(memcache_batch_alloc(s, nullptr, nullptr, 0, nullptr, 0, 1, 0, nullptr), 0);
    EXPECT_EQ(memcache_batch_copy(s, nullptr, nullptr, nullptr, 0, 3), 0);
    EXPECT_EQ(memcache_batch_write_finish(s, nullptr, nullptr, 0, nullptr, 0, nullptr), 0);
    EXPECT_EQ(memcache_batch_add_lease(s, nullptr, nullptr, 0, 0, nullptr), 0);
    EXPECT_EQ(memcache_batch_remove_lease(s, nullptr, nullptr, 0), 0);
    EXPECT_EQ(memcache_tier_move(s, nullptr, nullptr, 0, 2, 1, 1), 0);

    const uint8_t key[] = {'k', 'j'};
    const size_t lens[] = {1, 1};
    int32_t out[2] = {9, 9};
    auto refused = [&](int32_t rc) {
        bool all = rc == -3000 && out[0] == -3000 && out[1] == -3000;
        out[0] = out[1] = 9;
        return all;
    };
    EXPECT_TRUE(refused(memcache_remove(s, key, nullptr, 2, out)));  // null lengths
    EXPECT_TRUE(refused(memcache_exist(s, nullptr, lens, 2, out)));  // null key bytes
    const size_t huge[] = {SIZE_MAX, 2};
    EXPECT_TRUE(refused(memcache_exist(s, key, huge, 2, out)));  // lengths overflow
    const size_t counts[] = {1, 1};
    EXPECT_TRUE(refused(memcache_put(s, key, lens, 2, counts, nullptr, nullptr, 2, 3, 1,
                                     nullptr, 0, out)));
    EXPECT_TRUE(refused(memcache_get(s, key, lens, 2, nullptr, nullptr, nullptr, 0, 2, out)));
    EXPECT_TRUE(refused(memcache_batch_add_lease(s, key, nullptr, 2, 0, out)));
    EXPECT_TRUE(
        refused(memcache_batch_write_finish(s, key, lens, 2, nullptr, 2, out)));
    int64_t gvas[2] = {9, 9};
    EXPECT_EQ(memcache_batch_alloc(s, key, lens, 2, nullptr, 2, 1, 0, gvas), -3000);
    EXPECT_EQ(gvas[0], -3000);
    memcache_key_info_t info[2];
    EXPECT_EQ(memcache_key_info(s, key, nullptr, 2, info), -3000);
    EXPECT_EQ(info[1].status, -3000);
    EXPECT_EQ(memcache_batch_remove_lease(s, key, nullptr, 2), -3000);
    EXPECT_EQ(memcache_tier_move(s, nullptr, lens, 2, 1, 2, 0), -3000);
    EXPECT_EQ(memcache_batch_copy(s, nullptr, nullptr, nullptr, 1, 3), -3000);
    EXPECT_EQ(memcache_remove(s, key, lens, 2, nullptr), -3000);  // no room for results
    EXPECT_EQ(memcache_tear_down(s), 0);
    memcache_store_free(s);
}

TEST(ObjectStoreLifecycle, InPlaceCallsBeforeInit) {
    auto store = ObjectStore::CreateObjectStore();
    ASSERT_NE(store, nullptr);
    const int64_t not_init = memcache::MMC_CLIENT_NOT_INIT;
    auto gvas = store->BatchMalloc({"k", "j"}, {10, 10});
    ASSERT_EQ(gvas.size(), 2u);
    EXPECT_EQ(static_cast<int64_t>(gvas[0]), not_init);
    EXPECT_EQ(static_cast<int64_t>(gvas[1]), not_init);
    uint8_t b[8] = {0};
    std::vector<void *> g = {Gva(1 << 20)};
    std::vector<void *> bufs = {b};
    std::vector<uint64_t> sz = {sizeof b};
    EXPECT_EQ(store->BatchCopy(g, bufs, sz, memcache::SMEMB_COPY_H2G), not_init);
    EXPECT_EQ(store->BatchCopy(g, bufs, sz, memcache::SMEMB_COPY_L2G), not_init);
    EXPECT_EQ(store->BatchWriteFinish({"k"}, {0}), std::vector<int>{memcache::MMC_CLIENT_NOT_INIT});
    EXPECT_EQ(store->BatchAddLease({"k"}), std::vector<int>{memcache::MMC_CLIENT_NOT_INIT});
    EXPECT_EQ(store->BatchRemoveLease({"k"}), not_init);
    EXPECT_EQ(store->EvictKeys({"k"}), not_init);
    EXPECT_EQ(store->PrefetchKeys({"k"}), not_init);
    EXPECT_EQ(store->RemoveAll(), not_init);
}

}  // namespace
