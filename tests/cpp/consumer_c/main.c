/* A minimal C user of MemCache: mmc.h only. Sets up and starts the process's client
 * on the embedded pool, puts and gets one object, and stops. Exits 1 on the first
 * failed check (not assert: release builds define NDEBUG). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memcache/mmc.h>

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

int main(void) {
    static char data[100000], out[100000];
    const char *keys[2] = {"c-consumer/a", "c-consumer/b"};
    mmc_local_config_t config;
    mmc_init_config_t init;
    mmc_put_options options;
    mmc_buffer in, ob, bufs[2];
    mmc_data_info info;
    uint32_t id = 0;
    int32_t exist[2];
    size_t i;

    CHECK(mmcc_exist("c-consumer/none", 0) == -3019); /* nothing started yet */

    memset(&config, 0, sizeof config); /* empty fields keep MMC_CLIENT_* */
    strcpy(config.dram_size, "64MB");
    CHECK(mmc_setup(&config) == 0);
    init.deviceId = 0;
    init.initBm = true;
    CHECK(mmc_init(&init) == 0);
    CHECK(mmcc_local_service_id(&id) == 0);

    for (i = 0; i < sizeof data; ++i) data[i] = (char)(i * 7 + 1);
    memset(&options, 0, sizeof options);
    options.replicaNum = 1;
    for (i = 0; i < MAX_BLOB_COPIES; ++i) options.preferredLocalServiceIDs[i] = -1;
    in.addr = (uint64_t)(uintptr_t)data;
    in.type = 0;
    in.offset = 0;
    in.len = sizeof data;
    CHECK(mmcc_put("c-consumer/0", &in, options, 0) == 0);
    ob = in;
    ob.addr = (uint64_t)(uintptr_t)out;
    CHECK(mmcc_get("c-consumer/0", &ob, 0) == 0);
    CHECK(memcmp(data, out, sizeof data) == 0);
    CHECK(mmcc_query("c-consumer/0", &info, 0) == 0);
    CHECK(info.size == sizeof data && info.numBlobs == 1 && info.ranks[0] == id);

    bufs[0] = in;
    bufs[1] = in;
    bufs[1].len = 10;
    CHECK(mmcc_batch_put(keys, 2, bufs, &options, 0) == 0);
    CHECK(mmcc_batch_exist(keys, 2, exist, 0) == 0);
    CHECK(exist[0] == 0 && exist[1] == 0);
    CHECK(mmcc_remove("c-consumer/0", 0) == 0);
    CHECK(mmcc_exist("c-consumer/0", 0) == -3007);

    mmc_uninit();
    CHECK(mmcc_exist("c-consumer/a", 0) == -3019);
    printf("consumer_c: ok\n");
    return 0;
}
