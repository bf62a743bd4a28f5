// The C API (mmc.h) against real pools: the embedded one, and a meta service plus a
// local service started through mmcs_* on a loopback port.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
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
    EXPECT_EQ(mmcc_put("c/1", &in, Options(), 0), -3006);
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
    EXPECT_EQ(mmcc_wait(again, 10), 3006);  // the failure, negated
    std::vector<char> out(data.size());
    mmc_buffer ob = Buf(out.data(), out.size());
    int32_t get = mmcc_get("async/1", &ob, MMC_FLAG_ASYNC);
    ASSERT_GT(get, 0);
    EXPECT_EQ(mmcc_wait(get, 10), 0);
    EXPECT_EQ(out, data);
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
    std::vector<const char *> many(16385, "k");
    std::vector<int32_t> res(many.size());
    EXPECT_EQ(mmcc_batch_exist(many.data(), many.size(), res.data(), 0), -3000);
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
    EXPECT_EQ(refused([](mmc_local_config_t &c) { c.tls_enable = true; }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { c.config_store_tls_enable = true; }), -3000);
    EXPECT_EQ(refused([](mmc_local_config_t &c) { SetStr(c.hbm_size, "2GB"); }), -3000);
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

}  // namespace
