// The C++ ObjectStore against a pool of real `mmc meta` and `mmc local` processes under
// mutual TLS, with certificates from `mmc certs`: configured through 1.3.0's
// local_config tls_* fields, it puts and gets over the TLS control and data planes; a
// store without TLS is refused. MMC_BIN names the `mmc` binary (set by CMake).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "memcache/object_store.h"

extern char **environ;

namespace {

namespace fs = std::filesystem;
using memcache::ObjectStore;

// A child process whose stdout is a pipe to us; killed and reaped when it goes.
class Child {
public:
    explicit Child(const std::vector<std::string> &args) {
        int fds[2];
        if (pipe(fds) != 0) return;
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, fds[0]);
        std::vector<char *> argv;
        for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&actions);
        close(fds[1]);
        out_ = fds[0];
    }
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;
    ~Child() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (out_ >= 0) close(out_);
    }

    // The first line the child prints, waiting at most 60 s ("" when none came).
    std::string FirstLine() {
        std::string line;
        char c;
        while (out_ >= 0) {
            pollfd p{out_, POLLIN, 0};
            if (poll(&p, 1, 60000) != 1 || read(out_, &c, 1) != 1 || c == '\n') break;
            line.push_back(c);
        }
        return line;
    }

    // Runs to its end; its exit status (-1 when it could not start or was killed).
    int Wait() {
        int status = 0;
        if (pid_ <= 0 || waitpid(pid_, &status, 0) != pid_) return -1;
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

private:
    pid_t pid_ = -1;
    int out_ = -1;
};

uint16_t FreePort() {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a);
    getsockname(s, reinterpret_cast<sockaddr *>(&a), &n);
    close(s);
    return ntohs(a.sin_port);
}

class TlsPool : public ::testing::Test {
protected:
    void SetUp() override {
        const char *bin = std::getenv("MMC_BIN");
        ASSERT_NE(bin, nullptr) << "MMC_BIN names the mmc binary";
        mmc_ = bin;
        ASSERT_TRUE(fs::exists(mmc_)) << mmc_ << ": run cargo build first";
        char dir[] = "/tmp/mmc-cpp-tls-XXXXXX";
        ASSERT_NE(mkdtemp(dir), nullptr);
        dir_ = dir;
        Child certs({mmc_, "certs", "--dir", dir_ + "/certs"});
        ASSERT_EQ(certs.Wait(), 0);
        url_ = "tcp://127.0.0.1:" + std::to_string(FreePort());
        meta_ = std::make_unique<Child>(With({mmc_, "meta", "--discovery", url_}, "meta"));
        ASSERT_NE(meta_->FirstLine().find("listening"), std::string::npos);
        local_ = std::make_unique<Child>(With({mmc_, "local", "--discovery", url_, "--dram-size",
                                               "64MiB", "--service-id", "410"},
                                              "local"));
        ASSERT_NE(local_->FirstLine().find("local service"), std::string::npos);
    }

    void TearDown() override {
        local_.reset();
        meta_.reset();
        if (!dir_.empty()) fs::remove_all(dir_);
    }

    std::string Cert(const std::string &name) const { return dir_ + "/certs/" + name; }

    // `args` with the TLS flags of `role`'s certificate.
    std::vector<std::string> With(std::vector<std::string> args, const std::string &role) const {
        args.insert(args.end(), {"--tls-ca", Cert("ca.pem"), "--tls-cert", Cert(role + ".crt"),
                                 "--tls-key", Cert(role + ".key")});
        return args;
    }

    // A pure client of the pool over TCP, with TLS or without.
    local_config Client(bool tls) const {
        local_config c;
        c.meta_service_url = url_;
        c.protocol = "host_tcp";
        c.log_level = "error";
        c.client_timeout_seconds = 5;
        c.tls_enable = tls;
        if (tls) {
            c.tls_ca_path = Cert("ca.pem");
            c.tls_cert_path = Cert("client.crt");
            c.tls_key_path = Cert("client.key");
        }
        return c;
    }

    std::string mmc_, dir_, url_;
    std::unique_ptr<Child> meta_, local_;
};

// Plaintext first: a process's TLS identity is set once, by its first TLS client.
TEST_F(TlsPool, ServesAGoodCertificateAndRefusesPlaintext) {
    auto plain = ObjectStore::CreateObjectStore();
    ASSERT_EQ(plain->Setup(Client(false)), 0);
    EXPECT_NE(plain->Init(0, false), 0) << "a plaintext client was let in";
    plain->TearDown();

    auto store = ObjectStore::CreateObjectStore();
    ASSERT_EQ(store->Setup(Client(true)), 0);
    ASSERT_EQ(store->Init(0, false), 0);
    std::vector<uint8_t> data(300000);
    for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7 + 3);
    ASSERT_EQ(store->PutFrom("tls/cpp", data.data(), data.size()), 0);
    std::vector<uint8_t> out(data.size());
    ASSERT_EQ(store->GetInto("tls/cpp", out.data(), out.size()), 0);
    EXPECT_EQ(out, data);
    // Layers, as an engine writes its KV blocks.
    std::vector<std::vector<uint8_t>> layers(4, std::vector<uint8_t>(4096));
    std::vector<void *> ptrs;
    std::vector<size_t> sizes;
    for (size_t i = 0; i < layers.size(); i++) {
        std::memset(layers[i].data(), static_cast<int>(i + 1), layers[i].size());
        ptrs.push_back(layers[i].data());
        sizes.push_back(layers[i].size());
    }
    ASSERT_EQ(store->PutFromLayers("tls/layers", ptrs, sizes), 0);
    std::vector<std::vector<uint8_t>> back(4, std::vector<uint8_t>(4096));
    std::vector<void *> backPtrs;
    for (auto &b : back) backPtrs.push_back(b.data());
    ASSERT_EQ(store->GetIntoLayers("tls/layers", backPtrs, sizes), 0);
    EXPECT_EQ(back, layers);
    EXPECT_EQ(store->Remove("tls/cpp"), 0);
    EXPECT_EQ(store->IsExist("tls/cpp"), 0);
    EXPECT_EQ(store->TearDown(), 0);
}

}  // namespace
