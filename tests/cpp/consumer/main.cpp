// A minimal MemCache user: put and get one KV block through the C++ ObjectStore.
// Checks with its own macro (not assert: release builds define NDEBUG) and exits 1 on
// the first failure.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// Through the compatibility header: the original API's name and both C and C++ APIs.
#include <memcache/mmcache.h>

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,     \
                         __LINE__, #cond);                                  \
            std::exit(1);                                                   \
        }                                                                   \
    } while (0)

#ifdef WITH_OTHER_RUST
extern "C" unsigned long other_rust_sum(unsigned long n);
#endif

int main() {
    std::shared_ptr<ock::mmc::ObjectStore> store = ock::mmc::ObjectStore::CreateObjectStore();
    CHECK(store != nullptr);
    CHECK(store->Init(0, true) == 0);
    std::vector<std::vector<char>> layers;
    std::vector<void *> bufs;
    std::vector<size_t> sizes;
    for (int i = 0; i < 8; ++i) layers.emplace_back(64 << 10, static_cast<char>('a' + i));
    for (auto &l : layers) {
        bufs.push_back(l.data());
        sizes.push_back(l.size());
    }
    const std::string key = "consumer/block/0";
    CHECK(store->PutFromLayers(key, bufs, sizes) == 0);
    CHECK(store->IsExist(key) == 1);
    std::vector<std::vector<char>> out(8, std::vector<char>(64 << 10, 0));
    std::vector<void *> outs;
    for (auto &o : out) outs.push_back(o.data());
    CHECK(store->GetIntoLayers(key, outs, sizes) == 0);
    CHECK(out == layers);
    CHECK(store->GetKeyInfo(key).size == 8u * (64u << 10));
    CHECK(store->Remove(key) == 0);
    CHECK(store->GetIntoLayers(key, outs, sizes) == memcache::MMC_UNMATCHED_KEY);
    CHECK(store->TearDown() == 0);
    CHECK(mmcc_exist("consumer/none", 0) == -3019);  // the C client was never initialised
#ifdef WITH_OTHER_RUST
    CHECK(other_rust_sum(4) == 10);
#endif
    std::puts("consumer: ok");
    return 0;
}
