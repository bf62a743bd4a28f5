// The `layers` workload through the C++ ObjectStore, beside the same workload through
// the Rust API (`mmc bench layers --json`, run in the same session), and a memcpy of the
// same bytes. Prints both ratios to memcpy and the C++ overhead.
//
//   bench_layers [path/to/mmc]      (default: target/release/mmc)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "memcache/object_store.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kKeys = 64, kBatch = 8, kRounds = 5, kLayerPairs = 61;

double Seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// A number after "name": in a flat JSON object.
double JsonNumber(const std::string &json, const std::string &name) {
    auto at = json.find("\"" + name + "\":");
    if (at == std::string::npos) return -1;
    return std::atof(json.c_str() + at + name.size() + 3);
}

}  // namespace

int main(int argc, char **argv) {
    const std::string mmc = argc > 1 ? argv[1] : "target/release/mmc";
    std::vector<size_t> layout;
    for (int i = 0; i < kLayerPairs; ++i) {
        layout.push_back(128 << 10);
        layout.push_back(16 << 10);
    }
    size_t object = 0;
    for (size_t n : layout) object += n;
    const double bytes = static_cast<double>(object) * kKeys;

    // Objects back to back in page-aligned arenas, as an engine lays out its KV cache
    // (and as `mmc bench` does, so the figures compare).
    const size_t arena = object * kKeys;
    char *src_arena = static_cast<char *>(
        mmap(nullptr, arena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    char *dst_arena = static_cast<char *>(
        mmap(nullptr, arena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (src_arena == MAP_FAILED || dst_arena == MAP_FAILED) return 1;
    for (size_t i = 0; i < arena; ++i) src_arena[i] = static_cast<char>(i * 131 + (i >> 12));
    std::memset(dst_arena, 0xA5, arena);
    // src[k][l] / dst[k][l]: layer l of object k.
    std::vector<std::vector<char *>> src(kKeys), dst(kKeys);
    std::vector<std::string> keys;
    for (int k = 0; k < kKeys; ++k) {
        keys.push_back("bench/cpp/" + std::to_string(k));
        size_t at = k * object;
        for (size_t n : layout) {
            src[k].push_back(src_arena + at);
            dst[k].push_back(dst_arena + at);
            at += n;
        }
    }
    auto store = memcache::ObjectStore::CreateObjectStore();
    if (!store || store->Init(0, true) != 0) {
        std::fprintf(stderr, "bench: init failed\n");
        return 1;
    }
    auto pass = [&](bool put) {
        auto t = Clock::now();
        for (int b = 0; b < kKeys; b += kBatch) {
            std::vector<std::string> ks(keys.begin() + b, keys.begin() + b + kBatch);
            std::vector<std::vector<void *>> bufs;
            std::vector<std::vector<size_t>> sizes(kBatch, layout);
            for (int k = b; k < b + kBatch; ++k) {
                std::vector<void *> p;
                for (char *l : (put ? src : dst)[k]) p.push_back(l);
                bufs.push_back(p);
            }
            auto codes = put ? store->BatchPutFromLayers(ks, bufs, sizes)
                             : store->BatchGetIntoLayers(ks, bufs, sizes);
            for (int c : codes)
                if (c != 0) {
                    std::fprintf(stderr, "bench: code %d\n", c);
                    std::exit(1);
                }
        }
        return Seconds(t, Clock::now());
    };
    auto remove_all = [&] { store->BatchRemove(keys); };
    pass(true), pass(false), remove_all();  // warm-up
    std::vector<double> memcpy_s, put_s, get_s;
    for (int r = 0; r < kRounds; ++r) {
        auto t = Clock::now();
        for (int k = 0; k < kKeys; ++k)
            for (size_t l = 0; l < layout.size(); ++l)
                std::memcpy(dst[k][l], src[k][l], layout[l]);
        memcpy_s.push_back(Seconds(t, Clock::now()));
        put_s.push_back(pass(true));
        std::memset(dst_arena, 0x5A, arena);
        get_s.push_back(pass(false));
        if (std::memcmp(dst_arena, src_arena, arena) != 0) {
            std::fprintf(stderr, "bench: content differs\n");
            return 1;
        }
        remove_all();
    }
    store->TearDown();
    const double memcpy_gbps = bytes / Median(memcpy_s) / 1e9;
    const double put_ratio = bytes / Median(put_s) / 1e9 / memcpy_gbps;
    const double get_ratio = bytes / Median(get_s) / 1e9 / memcpy_gbps;

    std::string json;
    if (FILE *p = popen((mmc + " bench layers --json").c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) json.append(buf, n);
        pclose(p);
    }
    const double rust_put = JsonNumber(json, "put_ratio"), rust_get = JsonNumber(json, "get_ratio");
    std::printf("{\"workload\":\"layers\",\"api\":\"c++\",\"memcpy_gbps\":%.3f,"
                "\"put_ratio\":%.3f,\"get_ratio\":%.3f,\"rust_put_ratio\":%.3f,"
                "\"rust_get_ratio\":%.3f,\"put_overhead\":%.3f,\"get_overhead\":%.3f}\n",
                memcpy_gbps, put_ratio, get_ratio, rust_put, rust_get,
                rust_put / put_ratio - 1.0, rust_get / get_ratio - 1.0);
    return rust_put > 0 ? 0 : 2;
}
