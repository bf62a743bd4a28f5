// 1.3.0's local configuration of a client, for ObjectStore::Setup and mmc_setup:
// the fields (names, types, defaults) of 1.3.0's struct local_config, which Python
// calls LocalConfig. It is turned into mmc_local_config_t in the caller's
// translation unit, so it works with either libstdc++ string ABI.
//
// What each field does here is said at mmc_local_config_t (memcache/mmc_types.h): an
// empty string or a zero number keeps what MMC_CLIENT_CONFIG / MMC_CLIENT_* say; TLS,
// HBM and device protocols are refused (-3000); fields without a counterpart are
// accepted and unused.
// An empty meta_service_url (and none in the environment) means this process's
// embedded pool; the default, as in 1.3.0, is tcp://127.0.0.1:5000.
#ifndef MEMCACHE_LOCAL_CONFIG_H
#define MEMCACHE_LOCAL_CONFIG_H

#include <cstdint>
#include <cstring>
#include <string>

#include "memcache/mmc_types.h"

struct local_config {
    std::string meta_service_url = "tcp://127.0.0.1:5000";
    std::string config_store_url = "tcp://127.0.0.1:6000";
    std::string hcom_url = "tcp://127.0.0.1:7000";
    std::string backend_id;
    uint32_t world_size = 256;
    std::string protocol = "host_rdma";
    std::string tag;
    std::string tag_op_info;
    std::string dram_size = "1GB";
    std::string hbm_size = "0";
    std::string max_dram_size = "1TB";
    std::string max_hbm_size = "0";
    uint32_t client_retry_milliseconds = 0;
    uint32_t client_timeout_seconds = 60;
    uint32_t read_thread_pool_size = 32;
    uint32_t write_thread_pool_size = 4;
    bool aggregate_io = true;
    int32_t aggregate_num = 122;
    std::string log_level = "info";

    bool tls_enable = false;
    std::string tls_ca_path;
    std::string tls_ca_crl_path;
    std::string tls_cert_path;
    std::string tls_key_path;
    std::string tls_key_pass_path;
    std::string tls_package_path;
    std::string tls_decrypter_path;

    bool config_store_tls_enable = false;
    std::string config_store_tls_ca_path;
    std::string config_store_tls_ca_crl_path;
    std::string config_store_tls_cert_path;
    std::string config_store_tls_key_path;
    std::string config_store_tls_key_pass_path;
    std::string config_store_tls_package_path;
    std::string config_store_tls_decrypter_path;

    bool hcom_tls_enable = false;
    std::string hcom_tls_ca_path;
    std::string hcom_tls_ca_crl_path;
    std::string hcom_tls_cert_path;
    std::string hcom_tls_key_path;
    std::string hcom_tls_key_pass_path;
    std::string hcom_tls_decrypter_path;
};

// 1.3.0's name for the defaults.
inline local_config create_default_local_config() { return local_config{}; }

namespace memcache {
namespace detail {

// Copies s and its NUL into dst; false when it does not fit.
template <size_t N>
bool CopyField(char (&dst)[N], const std::string &s) {
    if (s.size() >= N || s.find('\0') != std::string::npos) return false;
    std::memcpy(dst, s.c_str(), s.size() + 1);
    return true;
}

// -3000 when a string is too long for its field.
inline int32_t ToC(const local_config &in, mmc_local_config_t &out) {
    std::memset(&out, 0, sizeof out);
    bool ok = CopyField(out.meta_service_url, in.meta_service_url) &&
              CopyField(out.config_store_url, in.config_store_url) &&
              CopyField(out.protocol, in.protocol) && CopyField(out.dram_size, in.dram_size) &&
              CopyField(out.hbm_size, in.hbm_size) &&
              CopyField(out.max_dram_size, in.max_dram_size) &&
              CopyField(out.max_hbm_size, in.max_hbm_size) &&
              CopyField(out.log_level, in.log_level);
    if (!ok) return -3000;
    out.world_size = in.world_size;
    out.client_retry_milliseconds = in.client_retry_milliseconds;
    out.client_timeout_seconds = in.client_timeout_seconds;
    out.read_thread_pool_size = in.read_thread_pool_size;
    out.write_thread_pool_size = in.write_thread_pool_size;
    out.aggregate_io = in.aggregate_io;
    out.aggregate_num = in.aggregate_num;
    out.tls.tlsEnable = in.tls_enable;
    out.hcom_tls.tlsEnable = in.hcom_tls_enable;
    out.config_store_tls.tlsEnable = in.config_store_tls_enable;
    ok = CopyField(out.tls.caPath, in.tls_ca_path) &&
         CopyField(out.tls.crlPath, in.tls_ca_crl_path) &&
         CopyField(out.tls.certPath, in.tls_cert_path) &&
         CopyField(out.tls.keyPath, in.tls_key_path) &&
         CopyField(out.tls.keyPassPath, in.tls_key_pass_path) &&
         CopyField(out.tls.packagePath, in.tls_package_path) &&
         CopyField(out.tls.decrypterLibPath, in.tls_decrypter_path) &&
         CopyField(out.hcom_tls.caPath, in.hcom_tls_ca_path) &&
         CopyField(out.hcom_tls.crlPath, in.hcom_tls_ca_crl_path) &&
         CopyField(out.hcom_tls.certPath, in.hcom_tls_cert_path) &&
         CopyField(out.hcom_tls.keyPath, in.hcom_tls_key_path) &&
         CopyField(out.hcom_tls.keyPassPath, in.hcom_tls_key_pass_path) &&
         CopyField(out.hcom_tls.decrypterLibPath, in.hcom_tls_decrypter_path) &&
         CopyField(out.config_store_tls.caPath, in.config_store_tls_ca_path) &&
         CopyField(out.config_store_tls.crlPath, in.config_store_tls_ca_crl_path) &&
         CopyField(out.config_store_tls.certPath, in.config_store_tls_cert_path) &&
         CopyField(out.config_store_tls.keyPath, in.config_store_tls_key_path) &&
         CopyField(out.config_store_tls.keyPassPath, in.config_store_tls_key_pass_path) &&
         CopyField(out.config_store_tls.packagePath, in.config_store_tls_package_path) &&
         CopyField(out.config_store_tls.decrypterLibPath, in.config_store_tls_decrypter_path);
    return ok ? 0 : -3000;
}

}  // namespace detail
}  // namespace memcache

#endif
