// The C API (mmc.h) against real pools: the embedded one, and a meta service plus a
// local service started through mmcs_* on a loopback port.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "memcache/mmc.h"

namespace {

template <size_t N>
void SetStr(char (&dst)[N], const std::string &s) {
    std::memset(dst, 0, N);
    std::strncpy(dst, s.c_str(), N - 1);
}

mmc_put_options Options(uint16_t replicas = 1) {
    mmc_put_options o{};
    o.replicaNum = replicas;
    for (auto &p : o.preferredLocalServiceIDs) p = -1;
    return o;
}

mmc_buffer Buf(void *p, size_t n) { return mmc_buffer{reinterpret_cast<uint64_t>(p), 0, 0, n}; }

// The embedded pool: a local service with no discoveryURL, and a client with none.
class CApiTest : public ::testing::Test {
protected:
    void SetUp() override {
        mmc_local_service_config_t lc{};
        lc.localDRAMSize = 64ull << 20;
        local = mmcs_local_service_start(&lc);
        ASSERT_NE(local, nullptr);
        mmc_client_config_t cc{};
        ASSERT_EQ(mmcc_init(&cc), 0);
    }
    void TearDown() override {
        mmcc_uninit();
        mmcs_local_service_stop(local);
    }
    mmc_local_service_t local = nullptr;
};

TEST_F(CApiTest, PutGetQueryRemove) {
    std::vector<char> data(9000, 'x');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
    mmc_buffer in = Buf(data.data(), data.size());
    ASSERT_EQ(mmcc_put("c/1", &in, Options(), 0), 0);
    EXPECT_EQ(mmcc_exist("c/1", 0), 0);
    EXPECT_EQ(mmcc_exist("c/none", 0), -3007);
    std::vector<char> out(data.size(), 0);
    mmc_buffer ob = Buf(out.data(), out.size());
    ASSERT_EQ(mmcc_get("c/1", &ob, 0), 0);
    EXPECT_EQ(out, data);
    mmc_data_info info{};
    ASSERT_EQ(mmcc_query("c/1", &info, 0), 0);
    EXPECT_TRUE(info.valid);
    EXPECT_EQ(info.size, data.size());
    EXPECT_EQ(info.numBlobs, 1);
    mmc_location_t loc = mmcc_get_location("c/1", 0);
    EXPECT_EQ(loc.status, 0);
    EXPECT_EQ(loc.size, data.size());
    // As 1.3.0: a put of an existing key answers 0 and the first value stays.
    std::vector<char> other(data.size(), 'o');
    mmc_buffer in2 = Buf(other.data(), other.size());
    EXPECT_EQ(mmcc_put("c/1", &in2, Options(), 0), 0);
    std::fill(out.begin(), out.end(), 0);
    ASSERT_EQ(mmcc_get("c/1", &ob, 0), 0);
    EXPECT_EQ(out, data);
    const char *again[] = {"c/1"};
    mmc_put_options o = Options();
    EXPECT_EQ(mmcc_batch_put(again, 1, &in2, o, 0), 0);
    EXPECT_EQ(mmcc_remove("c/1", 0), 0);
    EXPECT_EQ(mmcc_remove("c/1", 0), -3007);
    EXPECT_EQ(mmcc_query("c/1", &info, 0), -3007);
    EXPECT_FALSE(info.valid);
    EXPECT_EQ(mmcc_get_location("c/1", 0).status, -3007);
}

TEST_F(CApiTest, BatchCalls) {
    const char *keys[] = {"b/0", "b/1", "b/2"};
    std::vector<std::vector<char>> data;
    std::vector<mmc_buffer> bufs;
    for (int i = 0; i < 3; ++i) data.emplace_back(4096 * (i + 1), static_cast<char>('a' + i));
    for (auto &d : data) bufs.push_back(Buf(d.data(), d.size()));
    mmc_put_options o = Options();
    ASSERT_EQ(mmcc_batch_put(keys, 3, bufs.data(), o, 0), 0);
    int32_t exist[3] = {9, 9, 9};
    ASSERT_EQ(mmcc_batch_exist(keys, 3, exist, 0), 0);
    EXPECT_EQ(exist[0], 0);
    EXPECT_EQ(exist[2], 0);
    std::vector<std::vector<char>> out;
    std::vector<mmc_buffer> obufs;
    for (auto &d : data) out.emplace_back(d.size(), 0);
    for (auto &d : out) obufs.push_back(Buf(d.data(), d.size()));
    ASSERT_EQ(mmcc_batch_get(keys, 3, obufs.data(), 0), 0);
    EXPECT_EQ(out, data);
    mmc_data_info infos[3];
    ASSERT_EQ(mmcc_batch_query(keys, 3, infos, 0), 0);
    EXPECT_EQ(infos[1].size, 8192u);
    int32_t removed[3] = {9, 9, 9};
    EXPECT_EQ(mmcc_batch_remove(keys, 3, removed, 0), 0);
    EXPECT_EQ(mmcc_batch_remove(keys, 3, removed, 0), 3);  // all three already gone
    EXPECT_EQ(removed[0], -3007);
    ASSERT_EQ(mmcc_batch_exist(keys, 3, exist, 0), 0);
    EXPECT_EQ(exist[1], -3007);
}

TEST_F(CApiTest, AsyncCallsAndWait) {
    std::vector<char> data(1 << 20, 'q');
    mmc_buffer in = Buf(data.data(), data.size());
    int32_t handle = mmcc_put("async/1", &in, Options(), MMC_FLAG_ASYNC);
    ASSERT_GT(handle, 0);
    EXPECT_EQ(mmcc_wait(handle, 10), 0);
    EXPECT_EQ(mmcc_wait(handle, 1), 3015 * -1);  // a handle is waited for once
    int32_t again = mmcc_put("async/1", &in, Options(), MMC_FLAG_ASYNC);
    ASSERT_GT(again, 0);
    EXPECT_EQ(mmcc_wait(again, 10), 0);  // exists: 0, as 1.3.0
    std::vector<char> out(data.size());
    mmc_buffer ob = Buf(out.data(), out.size());
    int32_t get = mmcc_get("async/1", &ob, MMC_FLAG_ASYNC);
    ASSERT_GT(get, 0);
    EXPECT_EQ(mmcc_wait(get, 10), 0);
    EXPECT_EQ(out, data);
}

TEST_F(CApiTest, AsyncFailureIsNotATimeout) {
    std::vector<char> out(64);
    mmc_buffer ob = Buf(out.data(), out.size());
    int32_t get = mmcc_get("async/missing", &ob, MMC_FLAG_ASYNC);
    ASSERT_GT(get, 0);
    int32_t rc = mmcc_wait(get, 10);
    EXPECT_NE(rc, MMC_WAIT_TIMEOUT);
    EXPECT_EQ(rc, 3007);  // failed with -3007
    const char *keys[] = {"async/missing", "async/none"};
    std::vector<char> out2(64);
    mmc_buffer obufs[2] = {ob, Buf(out2.data(), out2.size())};
    int32_t batch = mmcc_batch_get(keys, 2, obufs, MMC_FLAG_ASYNC);
    ASSERT_GT(batch, 0);
    EXPECT_EQ(mmcc_wait(batch, 10), 3007);
    EXPECT_EQ(mmcc_wait(batch, 0), -3015);  // answered once
    // The two values besides 0 and a negated code are distinct from every code.
    EXPECT_EQ(MMC_WAIT_TIMEOUT, 1);
    EXPECT_EQ(MMC_WAIT_FAILED, 2);
}

TEST(CApiAsync, HandlesNotWaitedForAreFreedByUninit) {
    mmc_local_service_config_t lc{};
    lc.localDRAMSize = 64ull << 20;
    mmc_local_service_t local = mmcs_local_service_start(&lc);
    ASSERT_NE(local, nullptr);
    mmc_client_config_t cc{};
    ASSERT_EQ(mmcc_init(&cc), 0);
    std::vector<int32_t> handles;
    for (int i = 0; i < 50; ++i) handles.push_back(mmcc_remove("async/never", MMC_FLAG_ASYNC));
    for (int32_t h : handles) ASSERT_GT(h, 0);
    mmcc_uninit();
    for (int32_t h : handles) EXPECT_EQ(mmcc_wait(h, 1), -3015);
    mmcs_local_service_stop(local);
}

TEST_F(CApiTest, BatchCallsTakeNullArraysOfCountZero) {
    mmc_put_options o = Options();
    EXPECT_EQ(mmcc_batch_query(nullptr, 0, nullptr, 0), 0);
    EXPECT_EQ(mmcc_batch_remove(nullptr, 0, nullptr, 0), 0);
    EXPECT_EQ(mmcc_batch_exist(nullptr, 0, nullptr, 0), 0);
    EXPECT_EQ(mmcc_batch_put(nullptr, 0, nullptr, o, 0), 0);
    EXPECT_EQ(mmcc_batch_get(nullptr, 0, nullptr, 0), 0);
    int32_t put = mmcc_batch_put(nullptr, 0, nullptr, o, MMC_FLAG_ASYNC);
    ASSERT_GT(put, 0);
    EXPECT_EQ(mmcc_wait(put, 10), 0);
    int32_t get = mmcc_batch_get(nullptr, 0, nullptr, MMC_FLAG_ASYNC);
    ASSERT_GT(get, 0);
    EXPECT_EQ(mmcc_wait(get, 10), 0);
    EXPECT_EQ(mmcc_batch_malloc(nullptr, 0, nullptr, MMC_MEDIA_DRAM, 0, nullptr, nullptr, 0), 0);
    EXPECT_EQ(mmcc_batch_copy(nullptr, nullptr, nullptr, 0, SMEMB_COPY_H2G, 0), 0);
    EXPECT_EQ(mmcc_batch_write_finish(nullptr, 0, nullptr, nullptr, 0), 0);
    EXPECT_EQ(mmcc_batch_add_lease(nullptr, 0, 0, nullptr, 0), 0);
    EXPECT_EQ(mmcc_batch_remove_lease(nullptr, 0, 0), 0);
    EXPECT_EQ(mmcc_evict_keys(nullptr, 0, MMC_MEDIA_DRAM, MMC_MEDIA_SSD, 0), 0);
    EXPECT_EQ(mmcc_prefetch_keys(nullptr, 0, MMC_MEDIA_SSD, MMC_MEDIA_DRAM, 0), 0);
    // A null array of a non-empty batch is refused before anything happens.
    const char *keys[] = {"null/1"};
    EXPECT_EQ(mmcc_batch_query(keys, 1, nullptr, 0), -3000);
    EXPECT_EQ(mmcc_batch_remove(keys, 1, nullptr, 0), -3000);
    EXPECT_EQ(mmcc_batch_get(keys, 1, nullptr, 0), -3000);
    EXPECT_EQ(mmcc_batch_put(keys, 1, nullptr, o, 0), -3000);
    EXPECT_EQ(mmcc_batch_put(nullptr, 1, nullptr, o, MMC_FLAG_ASYNC), -3000);
    EXPECT_EQ(mmcc_batch_add_lease(keys, 1, 0, nullptr, 0), -3000);
}

TEST_F(CApiTest, BadInputIsRefused) {
    char b[16] = {0};
    mmc_buffer in = Buf(b, sizeof b);
    EXPECT_EQ(mmcc_put(nullptr, &in, Options(), 0), -3000);
    EXPECT_EQ(mmcc_put("k", nullptr, Options(), 0), -3000);
    mmc_buffer null_buf = Buf(nullptr, 16);
    EXPECT_EQ(mmcc_put("k", &null_buf, Options(), 0), -3000);
    mmc_buffer empty = Buf(b, 0);
    EXPECT_EQ(mmcc_put("k", &empty, Options(), 0), -3000);
    mmc_buffer device = in;
    device.type = 1;
    EXPECT_EQ(mmcc_put("k", &device, Options(), 0), -3000);
    EXPECT_EQ(mmcc_put(std::string(256, 'k').c_str(), &in, Options(), 0), -3000);
    EXPECT_EQ(mmcc_put("k", &in, Options(9), 0), -3000);
    EXPECT_EQ(mmcc_exist("k", 0), -3007);
    // Above the wire limit the client splits the batch; a count past any sane batch is
    // refused before a pointer is read.
    std::vector<const char *> many(16385, "k");
    std::vector<int32_t> res(many.size());
    EXPECT_EQ(mmcc_batch_exist(many.data(), many.size(), res.data(), 0), 0);
    EXPECT_EQ(res.front(), -3007);
    EXPECT_EQ(res.back(), -3007);
    EXPECT_EQ(mmcc_batch_exist(many.data(), 1u << 25, res.data(), 0), -3000);
    EXPECT_EQ(mmcc_batch_exist(nullptr, 2, res.data(), 0), -3000);
    const char *two[] = {"a", "b"};
    EXPECT_EQ(mmcc_batch_exist(two, 2, nullptr, 0), -3000);
    EXPECT_EQ(mmcc_wait(123456, 0), -3015);
    mmc_client_config_t cc{};
    EXPECT_EQ(mmcc_init(&cc), -3005);
    EXPECT_EQ(mmcc_init(nullptr), -3000);
    EXPECT_EQ(mmc_set_log_level(7), -3000);
}

TEST(CApiLifecycle, CallsBeforeInitAreRefused) {
    char b[8] = {0};
    mmc_buffer in = Buf(b, sizeof b);
    EXPECT_EQ(mmcc_put("k", &in, Options(), 0), -3019);
    EXPECT_EQ(mmcc_get("k", &in, 0), -3019);
    EXPECT_EQ(mmcc_exist("k", 0), -3019);
    EXPECT_EQ(mmcc_get_location("k", 0).status, -3019);
    EXPECT_EQ(mmcc_register_buffer(reinterpret_cast<uintptr_t>(b), sizeof b), -3019);
    EXPECT_EQ(mmcc_unregister_buffer(reinterpret_cast<uintptr_t>(b), sizeof b), -3019);
    uint32_t id = 0;
    EXPECT_EQ(mmcc_local_service_id(&id), -3019);
    mmcc_uninit();  // harmless without init
    mmc_uninit();
    mmcs_meta_service_stop(nullptr);
    mmcs_local_service_stop(nullptr);
    EXPECT_EQ(mmcs_meta_service_start(nullptr), nullptr);
    EXPECT_EQ(mmcs_local_service_start(nullptr), nullptr);
}

std::atomic<int> g_logged{0};
void Logger(int level, const char *msg) {
    if (level >= 0 && msg != nullptr && std::strlen(msg) > 0) g_logged.fetch_add(1);
}

TEST(CApiServices, MetaLocalAndClientOverLoopback) {
    ASSERT_EQ(mmc_set_extern_logger(Logger), 0);
    ASSERT_EQ(mmc_set_log_level(1), 0);
    const std::string url = "tcp://127.0.0.1:" + std::to_string(20000 + getpid() % 20000);
    mmc_meta_service_config_t mc{};
    SetStr(mc.discoveryURL, url);
    mc.evictThresholdHigh = 90;
    mc.evictThresholdLow = 80;
    mmc_meta_service_t meta = mmcs_meta_service_start(&mc);
    ASSERT_NE(meta, nullptr);
    mmc_local_service_config_t lc{};
    SetStr(lc.discoveryURL, url);
    lc.localDRAMSize = 32ull << 20;
    lc.rankId = 3;
    mmc_local_service_t local = mmcs_local_service_start(&lc);
    ASSERT_NE(local, nullptr);
    mmc_client_config_t cc{};
    SetStr(cc.discoveryURL, url);
    ASSERT_EQ(mmcc_init(&cc), 0);

    std::vector<char> data(20000, 'z');
    mmc_buffer in = Buf(data.data(), data.size());
    ASSERT_EQ(mmcc_put("remote/1", &in, Options(), 0), 0);
    std::vector<char> out(data.size());
    mmc_buffer ob = Buf(out.data(), out.size());
    ASSERT_EQ(mmcc_get("remote/1", &ob, 0), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(mmcc_get_location("remote/1", 0).rank, 3u);

    mmcc_uninit();
    mmcs_local_service_stop(local);
    mmcs_meta_service_stop(meta);
    EXPECT_GT(g_logged.load(), 0) << "the logger callback saw our log lines";
}

// ---- 1.3.0's process-level set-up: mmc_setup, mmc_init, mmc_uninit ----

// The embedded pool with 64 MiB of DRAM (a zeroed struct keeps the environment's
// settings, which here would be 1 GiB).
mmc_local_config_t EmbeddedConfig() {
    mmc_local_config_t c{};
    SetStr(c.dram_size, "64MB");
    SetStr(c.log_level, "warn");
    return c;
}

TEST(CApiSetup, SetupInitUseUninit) {
    mmc_local_config_t c = EmbeddedConfig();
    ASSERT_EQ(mmc_setup(&c), 0);
    mmc_init_config_t init{0, true};
    ASSERT_EQ(mmc_init(&init), 0);
    EXPECT_EQ(mmc_init(&init), -3005);
    EXPECT_EQ(mmc_setup(&c), -3005);
    mmc_client_config_t cc{};
    EXPECT_EQ(mmcc_init(&cc), -3005);

    std::vector<char> data(5000, 'q');
    mmc_buffer in = Buf(data.data(), data.size());
    ASSERT_EQ(mmcc_put("setup/1", &in, Options(), 0), 0);
    std::vector<char> out(data.size());
    mmc_buffer ob = Buf(out.data(), out.size());
    ASSERT_EQ(mmcc_get("setup/1", &ob, 0), 0);
    EXPECT_EQ(out, data);

    uint32_t id = 12345;
    ASSERT_EQ(mmcc_local_service_id(&id), 0);
    mmc_data_info info{};
    ASSERT_EQ(mmcc_query("setup/1", &info, 0), 0);
    EXPECT_EQ(info.ranks[0], id);
    EXPECT_EQ(mmcc_local_service_id(nullptr), -3000);

    mmc_uninit();
    EXPECT_EQ(mmcc_exist("setup/1", 0), -3019);
    EXPECT_EQ(mmcc_local_service_id(&id), -3019);
    mmc_uninit();  // harmless twice
    // The recorded configuration stays for the next mmc_init.
    ASSERT_EQ(mmc_init(&init), 0);
    EXPECT_EQ(mmcc_exist("setup/none", 0), -3007);
    mmc_uninit();
}

TEST(CApiSetup, PureClientHasNoLocalService) {
    mmc_local_service_config_t lc{};
    lc.localDRAMSize = 64ull << 20;
    mmc_local_service_t local = mmcs_local_service_start(&lc);
    ASSERT_NE(local, nullptr);
    mmc_local_config_t c = EmbeddedConfig();
    ASSERT_EQ(mmc_setup(&c), 0);
    mmc_init_config_t init{0, false};
    ASSERT_EQ(mmc_init(&init), 0);
    uint32_t id = 0;
    EXPECT_EQ(mmcc_local_service_id(&id), -3018);
    std::vector<char> data(100, 'p');
    mmc_buffer in = Buf(data.data(), data.size());
    EXPECT_EQ(mmcc_put("setup/pure", &in, Options(), 0), 0);
    mmc_uninit();
    mmcs_local_service_stop(local);
}

TEST(CApiSetup, BadInputIsRefused) {
    EXPECT_EQ(mmc_setup(nullptr), -3000);
    EXPECT_EQ(mmc_init(nullptr), -3000);
    auto refused = [](void (*change)(mmc_local_config_t &)) {
        mmc_local_config_t c = EmbeddedConfig();
        change(c);
        return mmc_setup(&c);
    };
    EXPECT_EQ(refused([](mmc_local_config_t &c) { c.tls.tlsEnable = true; }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { c.config_store_tls.tlsEnable = true; }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { SetStr(c.hbm_size, "2.5GB"); }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { SetStr(c.protocol, "device_sdma"); }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { SetStr(c.dram_size, "1.5GB"); }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { SetStr(c.max_dram_size, "x"); }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { SetStr(c.log_level, "verbose"); }), -3000);

    // A meta service where nothing listens: mmc_init fails and starts nothing.
    mmc_local_config_t c = EmbeddedConfig();
    SetStr(c.meta_service_url, "tcp://127.0.0.1:1");
    c.client_timeout_seconds = 1;
    ASSERT_EQ(mmc_setup(&c), 0);
    mmc_init_config_t init{0, false};
    EXPECT_NE(mmc_init(&init), 0);
    EXPECT_EQ(mmcc_exist("k", 0), -3019);

    // Device memory passes setup; the embedded pool has none to offer, so init refuses it.
    mmc_local_config_t hbm = EmbeddedConfig();
    SetStr(hbm.hbm_size, "1GB");
    ASSERT_EQ(mmc_setup(&hbm), 0);
    mmc_init_config_t contribute{0, true};
    EXPECT_EQ(mmc_init(&contribute), -3000);
    EXPECT_EQ(mmcc_exist("k", 0), -3019);
}

TEST_F(CApiTest, RegisterBuffers) {
    std::vector<char> region(1 << 20);
    uint64_t addr = reinterpret_cast<uintptr_t>(region.data());
    ASSERT_EQ(mmcc_register_buffer(addr, region.size()), 0);
    EXPECT_EQ(mmcc_register_buffer(addr, region.size()), -3005);
    EXPECT_EQ(mmcc_register_buffer(addr + 4096, 4096), -3000);  // overlaps
    EXPECT_EQ(mmcc_register_buffer(0, 4096), -3000);
    EXPECT_EQ(mmcc_register_buffer(addr, 0), -3000);
    mmc_buffer in = Buf(region.data(), 4096);
    EXPECT_EQ(mmcc_put("reg/1", &in, Options(), 0), 0);
    EXPECT_EQ(mmcc_unregister_buffer(addr, 4096), -3000);  // not the recorded size
    EXPECT_EQ(mmcc_unregister_buffer(addr, region.size()), 0);
    EXPECT_EQ(mmcc_unregister_buffer(addr, region.size()), -3000);
    // The fixture's client is a pure client (mmcc_init).
    uint32_t id = 0;
    EXPECT_EQ(mmcc_local_service_id(&id), -3018);
}

// ---- 1.3.0's in-place API ----

TEST_F(CApiTest, InPlaceWriteCommitLeaseRead) {
    const size_t n = 64 << 10, half = n / 2;
    std::vector<char> data(n);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>(i * 29 + 3);
    const char *keys[] = {"cip/a", "cip/b"};
    uint64_t sizes[] = {n, 4096};
    uint64_t gvas[2] = {0, 0};
    int32_t res[2] = {9, 9};
    ASSERT_EQ(mmcc_batch_malloc(keys, 2, sizes, MMC_MEDIA_DRAM, 0, gvas, res, 0), 0);
    EXPECT_EQ(res[0], 0);
    EXPECT_EQ(res[1], 0);
    ASSERT_GT(gvas[0], 0u);
    ASSERT_GT(gvas[1], 0u);

    // Two pieces of the first object from two threads.
    int32_t rc[2] = {-1, -1};
    std::vector<std::thread> writers;
    for (int t = 0; t < 2; ++t) {
        writers.emplace_back([&, t] {
            uint64_t g = gvas[0] + t * half;
            void *b = data.data() + t * half;
            uint64_t sz = half;
            rc[t] = mmcc_batch_copy(&g, &b, &sz, 1, SMEMB_COPY_H2G, 0);
        });
    }
    for (auto &w : writers) w.join();
    EXPECT_EQ(rc[0], 0);
    EXPECT_EQ(rc[1], 0);
    int32_t write[2] = {0, -1};
    int32_t finish[2] = {9, 9};
    ASSERT_EQ(mmcc_batch_write_finish(keys, 2, write, finish, 0), 0);
    EXPECT_EQ(finish[0], 0);
    EXPECT_EQ(finish[1], 0);
    std::vector<char> out(n, 0);
    mmc_buffer ob = Buf(out.data(), out.size());
    ASSERT_EQ(mmcc_get("cip/a", &ob, 0), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(mmcc_exist("cip/b", 0), -3007);
    // Finishing a stored key again is done (as in 1.3.0); a key never written is not.
    EXPECT_EQ(mmcc_batch_write_finish(keys, 1, write, finish, 0), 0);
    EXPECT_EQ(finish[0], 0);
    EXPECT_EQ(mmcc_batch_write_finish(keys + 1, 1, write, finish, 0), 1);
    EXPECT_EQ(finish[0], -3000);

    // Lease, read in place at the address mmcc_query gives, release.
    int32_t lease[2] = {9, 9};
    const char *leased[] = {"cip/a", "cip/none"};
    EXPECT_EQ(mmcc_batch_add_lease(leased, 2, 0, lease, 0), 1);
    EXPECT_EQ(lease[0], 0);
    EXPECT_EQ(lease[1], -3007);
    mmc_data_info info{};
    ASSERT_EQ(mmcc_query("cip/a", &info, 0), 0);
    ASSERT_EQ(info.numBlobs, 1);
    ASSERT_GT(info.gvas[0], 0u);
    EXPECT_EQ(info.types[0], MMC_MEDIA_DRAM);  // 1.3.0's number, as Python's type_list
    std::fill(out.begin(), out.end(), 0);
    uint64_t g = info.gvas[0];
    void *b = out.data();
    uint64_t sz = n;
    ASSERT_EQ(mmcc_batch_copy(&g, &b, &sz, 1, SMEMB_COPY_G2H, 0), 0);
    EXPECT_EQ(out, data);
    EXPECT_EQ(mmcc_batch_copy(&g, &b, &sz, 1, SMEMB_COPY_AUTO, 0), 0);
    EXPECT_EQ(mmcc_batch_remove_lease(keys, 1, 0), 0);
    EXPECT_EQ(mmcc_batch_copy(&g, &b, &sz, 1, SMEMB_COPY_G2H, 0), -3102);
    EXPECT_EQ(mmcc_batch_remove_lease(keys, 1, 0), -3000);

    // An existing key cannot be allocated: its first value stays.
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, sizes, MMC_MEDIA_DRAM, 0, gvas, res, 0), 1);
    EXPECT_EQ(res[0], -3006);
    EXPECT_EQ(gvas[0], 0u);
}

TEST_F(CApiTest, InPlaceWriterPastItsLease) {
    std::vector<char> data(4096, 'l');
    const char *keys[] = {"cip/late"};
    uint64_t size = data.size();
    uint64_t gva = 0;
    int32_t res = 9;
    ASSERT_EQ(mmcc_batch_malloc(keys, 1, &size, MMC_MEDIA_DRAM, 50, &gva, &res, 0), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    void *b = data.data();
    EXPECT_EQ(mmcc_batch_copy(&gva, &b, &size, 1, SMEMB_COPY_H2G, 0), -3106);
    int32_t write = 0, finish = 9;
    EXPECT_EQ(mmcc_batch_write_finish(keys, 1, &write, &finish, 0), 1);
    EXPECT_EQ(finish, -3106);
    EXPECT_EQ(mmcc_exist("cip/late", 0), -3007);
}

TEST_F(CApiTest, InPlaceRefusals) {
    std::vector<char> data(4096, 'r');
    const char *keys[] = {"cip/r", "cip/s"};
    uint64_t sizes[] = {4096, 0};
    uint64_t gvas[2] = {0, 0};
    int32_t res[2] = {9, 9};
    ASSERT_EQ(mmcc_batch_malloc(keys, 2, sizes, MMC_MEDIA_DRAM, 0, gvas, res, 0), 1);
    EXPECT_EQ(res[1], -3000);
    void *b = data.data();
    EXPECT_EQ(mmcc_batch_copy(gvas, &b, sizes, 1, SMEMB_COPY_L2G, 0), -3000);
    EXPECT_EQ(mmcc_batch_copy(gvas, &b, sizes, 1, SMEMB_COPY_G2L, 0), -3000);
    EXPECT_EQ(mmcc_batch_copy(gvas, &b, sizes, 1, SMEMB_COPY_G2H, 0), -3101);
    EXPECT_EQ(mmcc_batch_copy(nullptr, &b, sizes, 1, SMEMB_COPY_H2G, 0), -3000);
    EXPECT_EQ(mmcc_batch_copy(gvas, nullptr, sizes, 1, SMEMB_COPY_H2G, 0), -3000);
    // HBM: a media 1.3.0 knows, refused per key (DRAM only); 7: no media at all.
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, sizes, MMC_MEDIA_HBM, 0, gvas, res, 0), 1);
    EXPECT_EQ(res[0], -3000);
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, sizes, 7, 0, gvas, res, 0), -3000);
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, nullptr, MMC_MEDIA_DRAM, 0, gvas, res, 0), -3000);
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, sizes, MMC_MEDIA_DRAM, 0, nullptr, res, 0), -3000);
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, sizes, MMC_MEDIA_DRAM, 0, gvas, nullptr, 0), -3000);
    int32_t write = 1;
    EXPECT_EQ(mmcc_batch_write_finish(keys, 1, nullptr, res, 0), -3000);
    EXPECT_EQ(mmcc_batch_write_finish(keys, 1, &write, nullptr, 0), -3000);
    EXPECT_EQ(mmcc_batch_write_finish(keys, 1, &write, res, 0), 0);  // rolled back
    EXPECT_EQ(mmcc_batch_add_lease(nullptr, 1, 0, res, 0), -3000);
    EXPECT_EQ(mmcc_batch_remove_lease(nullptr, 1, 0), -3000);
}

TEST_F(CApiTest, EvictAndPrefetch) {
    std::vector<char> data(3000, 'e');
    mmc_buffer in = Buf(data.data(), data.size());
    ASSERT_EQ(mmcc_put("cev/1", &in, Options(), 0), 0);
    const char *keys[] = {"cev/1"};
    // No SSD tier in this pool.
    EXPECT_EQ(mmcc_evict_keys(keys, 1, MMC_MEDIA_DRAM, MMC_MEDIA_SSD, 0), -3013);
    EXPECT_EQ(mmcc_evict_keys(keys, 1, MMC_MEDIA_SSD, MMC_MEDIA_DRAM, 0), -3000);
    EXPECT_EQ(mmcc_evict_keys(keys, 1, 1, 7, 0), -3000);
    EXPECT_EQ(mmcc_prefetch_keys(keys, 1, MMC_MEDIA_SSD, MMC_MEDIA_DRAM, 0), 0);
    const char *missing[] = {"cev/none"};
    EXPECT_EQ(mmcc_prefetch_keys(missing, 1, MMC_MEDIA_SSD, MMC_MEDIA_DRAM, 0), -3007);
    EXPECT_EQ(mmcc_evict_keys(nullptr, 1, MMC_MEDIA_DRAM, MMC_MEDIA_SSD, 0), -3000);
}

TEST(CApiLifecycle, InPlaceCallsBeforeInitAreRefused) {
    const char *keys[] = {"k"};
    uint64_t size = 8, gva = 0;
    int32_t res = 9;
    EXPECT_EQ(mmcc_batch_malloc(keys, 1, &size, MMC_MEDIA_DRAM, 0, &gva, &res, 0), -3019);
    char b[8] = {0};
    void *bp = b;
    uint64_t g = 1 << 20;
    EXPECT_EQ(mmcc_batch_copy(&g, &bp, &size, 1, SMEMB_COPY_H2G, 0), -3019);
    int32_t write = 0;
    EXPECT_EQ(mmcc_batch_write_finish(keys, 1, &write, &res, 0), -3019);
    EXPECT_EQ(mmcc_batch_add_lease(keys, 1, 0, &res, 0), -3019);
    EXPECT_EQ(mmcc_batch_remove_lease(keys, 1, 0), -3019);
    EXPECT_EQ(mmcc_evict_keys(keys, 1, MMC_MEDIA_DRAM, MMC_MEDIA_SSD, 0), -3019);
    EXPECT_EQ(mmcc_prefetch_keys(keys, 1, MMC_MEDIA_SSD, MMC_MEDIA_DRAM, 0), -3019);
}

}  // namespace
