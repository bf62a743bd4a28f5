// The `layers` workload through the C++ ObjectStore, beside the same workload through
// the Rust API and a memcpy of the same bytes. C++ rounds alternate with the rounds of
// one `mmc bench layers --stepped` process (this machine drifts by tens of percent
// between seconds), and each pair gives one C++ / Rust ratio. Prints the ratios to
// memcpy, the medians of the pairs' ratios and the C++ overhead.
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
#include <sys/wait.h>
#include <unistd.h>

#include "memcache/object_store.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kKeys = 64, kBatch = 8, kRounds = 15, kLayerPairs = 61;

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

// `mmc bench layers --stepped`: one timed, verified Rust round per Next(), from a process
// started once (one that exits hands gigabytes back and slows the next seconds down).
class RustRounds {
  public:
    RustRounds(const std::string &mmc, int rounds) {
        const std::string n = std::to_string(rounds);
        int in[2], out[2];
        if (pipe(in) != 0 || pipe(out) != 0) return;
        pid_ = fork();
        if (pid_ == 0) {
            dup2(in[0], 0);
            dup2(out[1], 1);
            close(in[0]), close(in[1]), close(out[0]), close(out[1]);
            execl(mmc.c_str(), mmc.c_str(), "bench", "layers", "--json", "--stepped", "--rounds",
                  n.c_str(), static_cast<char *>(nullptr));
            _exit(127);
        }
        close(in[0]), close(out[1]);
        to_ = fdopen(in[1], "w");
        from_ = fdopen(out[0], "r");
        ready_ = Line().find("\"ready\":true") != std::string::npos;
    }
    bool Ready() const { return ready_; }
    // The figures of the next round: a flat JSON object, empty if the run ended.
    std::string Next() {
        std::fputs("\n", to_);
        std::fflush(to_);
        return Line();
    }
    // Ends the rounds; true when the run exited cleanly with its content verified.
    bool Finish() {
        std::fclose(to_);
        std::string last, line;
        while (!(line = Line()).empty()) last = line;
        std::fclose(from_);
        int status = 0;
        waitpid(pid_, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
               last.find("\"verified\":true") != std::string::npos;
    }

  private:
    std::string Line() {
        char buf[8192];
        return from_ && std::fgets(buf, sizeof buf, from_) ? buf : "";
    }
    pid_t pid_ = -1;
    FILE *to_ = nullptr, *from_ = nullptr;
    bool ready_ = false;
};

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
    RustRounds rust(mmc, kRounds);
    if (!rust.Ready()) {
        std::fprintf(stderr, "bench: %s bench layers --stepped did not start\n", mmc.c_str());
        return 1;
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
    std::vector<double> memcpy_s, put_s, get_s, put_vs_rust, get_vs_rust;
    for (int r = 0; r < kRounds; ++r) {
        std::string figures;
        if (r % 2) figures = rust.Next();  // who goes first alternates
        // The reference is the fastest one-thread copy: per layer, of the whole arena,
        // or (below) the Rust round's, which also times our own copy kernels.
        auto t = Clock::now();
        for (int k = 0; k < kKeys; ++k)
            for (size_t l = 0; l < layout.size(); ++l)
                std::memcpy(dst[k][l], src[k][l], layout[l]);
        const double per_layer = Seconds(t, Clock::now());
        t = Clock::now();
        std::memcpy(dst_arena, src_arena, arena);
        memcpy_s.push_back(std::min(per_layer, Seconds(t, Clock::now())));
        put_s.push_back(pass(true));
        std::memset(dst_arena, 0x5A, arena);
        get_s.push_back(pass(false));
        if (std::memcmp(dst_arena, src_arena, arena) != 0) {
            std::fprintf(stderr, "bench: content differs\n");
            return 1;
        }
        remove_all();
        if (r % 2 == 0) figures = rust.Next();
        const double rust_put = JsonNumber(figures, "put_gbps");
        const double rust_get = JsonNumber(figures, "get_gbps");
        if (rust_put <= 0 || rust_get <= 0) {
            std::fprintf(stderr, "bench: the Rust round failed\n");
            return 1;
        }
        const double rust_memcpy = JsonNumber(figures, "memcpy_gbps");
        if (rust_memcpy > 0) memcpy_s.back() = std::min(memcpy_s.back(), bytes / rust_memcpy / 1e9);
        put_vs_rust.push_back(bytes / put_s.back() / 1e9 / rust_put);
        get_vs_rust.push_back(bytes / get_s.back() / 1e9 / rust_get);
    }
    store->TearDown();
    if (!rust.Finish()) {
        std::fprintf(stderr, "bench: the Rust run did not end cleanly\n");
        return 1;
    }
    const double memcpy_gbps = bytes / Median(memcpy_s) / 1e9;
    const double put_ratio = bytes / Median(put_s) / 1e9 / memcpy_gbps;
    const double get_ratio = bytes / Median(get_s) / 1e9 / memcpy_gbps;
    const double put_vs = Median(put_vs_rust), get_vs = Median(get_vs_rust);
    std::printf("{\"workload\":\"layers\",\"api\":\"c++\",\"rounds\":%d,\"memcpy_gbps\":%.3f,"
                "\"put_ratio\":%.3f,\"get_ratio\":%.3f,\"put_vs_rust\":%.3f,"
                "\"get_vs_rust\":%.3f,\"put_overhead\":%.3f,\"get_overhead\":%.3f}\n",
                kRounds, memcpy_gbps, put_ratio, get_ratio, put_vs, get_vs, 1.0 / put_vs - 1.0,
                1.0 / get_vs - 1.0);
    return 0;
}
