// Compatibility header: code written for the original API's `ock::mmc` namespace and
// `mmcache.h` compiles against this library unchanged.
#ifndef MEMCACHE_MMCACHE_H
#define MEMCACHE_MMCACHE_H

#include "memcache/mmc.h"
#include "memcache/object_store.h"

namespace ock {
namespace mmc {
using memcache::KeyInfo;
using memcache::ObjectStore;
using memcache::ReplicateConfig;
}  // namespace mmc
}  // namespace ock

// 1.3.0's mmc_setup takes its C++ struct local_config; a C++ overload of the C function.
inline int32_t mmc_setup(const local_config *config) {
    if (config == nullptr) return -3000;
    mmc_local_config_t c;
    int32_t rc = memcache::detail::ToC(*config, c);
    return rc != 0 ? rc : mmc_setup(&c);
}

#endif
