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

#endif
