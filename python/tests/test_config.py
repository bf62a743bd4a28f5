"""1.3.0's configuration on our package: `LocalConfig` / `MetaConfig` with 1.3.0's fields
and defaults, `DistributedObjectStore.setup`, `MetaService.setup`, and the files named by
`MMC_LOCAL_CONFIG_PATH` / `MMC_META_CONFIG_PATH` in 1.3.0's `ock.mmc.*` format."""

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from memcache_hybrid import DistributedObjectStore, LocalConfig, MetaConfig, MetaService

from conftest import free_port

# What 1.3.0's `LocalConfig().str()` and `MetaConfig().str()` print (run on the seed).
SEED_LOCAL_STR = """LocalConfig {
  meta_service_url: tcp://127.0.0.1:5000
  config_store_url: tcp://127.0.0.1:6000
  backend_id: 
  log_level: info
  world_size: 256
  protocol: host_rdma
  tag: 
  tag_op_info: 
  hcom_url: tcp://127.0.0.1:7000
  dram_size: 1GB
  hbm_size: 0
  max_dram_size: 1TB
  max_hbm_size: 0
  client_retry_milliseconds: 0
  client_timeout_seconds: 60
  read_thread_pool_size: 32
  write_thread_pool_size: 4
  aggregate_io: true
  aggregate_num: 122
  tls_enable: false
  tls_ca_path: 
  tls_ca_crl_path: 
  tls_cert_path: 
  tls_key_path: 
  tls_key_pass_path: 
  tls_package_path: 
  tls_decrypter_path: 
  config_store_tls_enable: false
  config_store_tls_ca_path: 
  config_store_tls_ca_crl_path: 
  config_store_tls_cert_path: 
  config_store_tls_key_path: 
  config_store_tls_key_pass_path: 
  config_store_tls_package_path: 
  config_store_tls_decrypter_path: 
  hcom_tls_enable: false
  hcom_tls_ca_path: 
  hcom_tls_ca_crl_path: 
  hcom_tls_cert_path: 
  hcom_tls_key_path: 
  hcom_tls_key_pass_path: 
  hcom_tls_decrypter_path: 
  dynamic_config_enable: true
  dynamic_config_interval: 5
}"""

SEED_META_STR = """MetaConfig {
  meta_service_url: tcp://127.0.0.1:5000
  config_store_url: tcp://127.0.0.1:6000
  metrics_url: http://127.0.0.1:8000
  ha_enable: false
  log_level: 1
  log_path: /var/log/memcache_hybrid
  log_rotation_file_size: 20971520
  log_rotation_file_count: 50
  log_output_target: 1
  evict_threshold_high: 90
  evict_threshold_low: 80
  defrag_evict_threshold: 70
  evict_check_interval_seconds: 5
  lru_type: sharded_lru
  lru_shard_count: 16
  kv_events_enable: false
  kv_events_transport_type: 0
  kv_events_endpoint: 
  kv_events_hash_as_int: true
  zmq_curve_enable: false
  zmq_public_key: 
  lease_ttl_ms: 10000
  evict_yield_interval: 0
  evict_yield_duration_us: 100
  tls_enable: false
  tls_ca_path: 
  tls_ca_crl_path: 
  tls_cert_path: 
  tls_key_path: 
  tls_key_pass_path: 
  tls_package_path: 
  tls_decrypter_path: 
  config_store_tls_enable: false
  config_store_tls_ca_path: 
  config_store_tls_ca_crl_path: 
  config_store_tls_cert_path: 
  config_store_tls_key_path: 
  config_store_tls_key_pass_path: 
  config_store_tls_package_path: 
  config_store_tls_decrypter_path: 
}"""

# The fields 1.3.0's MetaConfig has beyond what its str() shows, with their defaults.
SEED_META_HIDDEN = {
    "kv_events_block_size": 0,
    "kv_events_model_name": "",
    "kv_events_queue_capacity": 65536,
    "kv_events_tenant_id": "default",
    "zmq_private_key": "***",
}


def fields(cls):
    return sorted(n for n, v in vars(cls).items() if not n.startswith("_") and not callable(v))


def parse_str(text):
    """`name: value` lines of a str()."""
    out = {}
    for line in text.splitlines()[1:-1]:
        name, _, value = line.strip().partition(":")
        out[name] = value.strip()
    return out


def shown(value):
    """A field's value as str() shows it."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_defaults_and_str_are_1_3_0s():
    assert LocalConfig().str() == SEED_LOCAL_STR
    assert MetaConfig().str() == SEED_META_STR
    local = LocalConfig()
    for name, value in parse_str(SEED_LOCAL_STR).items():
        if not name.startswith("dynamic_config"):
            assert shown(getattr(local, name)) == value, name
    assert len(fields(LocalConfig)) == 42
    meta = MetaConfig()
    expected = parse_str(SEED_META_STR)
    # str() spells these differently from the fields.
    expected.update(log_level="info", log_rotation_file_size="20", log_output_target="file", lru_type="1")
    expected["zmq_enable_curve"] = expected.pop("zmq_curve_enable")
    expected.update({k: shown(v) for k, v in SEED_META_HIDDEN.items()})
    assert sorted(expected) == fields(MetaConfig)
    for name, value in expected.items():
        assert shown(getattr(meta, name)) == value, name
    assert isinstance(meta.lru_type, int) and isinstance(local.hbm_size, str)


@pytest.mark.parametrize("cls", [LocalConfig, MetaConfig])
def test_fields_round_trip(cls):
    c = cls()
    new = {}
    for i, name in enumerate(fields(cls)):
        old = getattr(c, name)
        value = (not old) if isinstance(old, bool) else (old + 7 + i) if isinstance(old, int) else f"v{i}"
        setattr(c, name, value)
        new[name] = value
    for name, value in new.items():
        if name == "zmq_private_key":
            assert getattr(c, name) == "***"  # write-only, as in 1.3.0
        else:
            assert getattr(c, name) == value, name
    with pytest.raises(TypeError):
        c.log_level = 3


def local_config(url, protocol="host_shm", dram="64MB"):
    cfg = LocalConfig()
    cfg.meta_service_url = url
    cfg.protocol = protocol
    cfg.dram_size = dram
    cfg.hbm_size = "0"
    return cfg


def put_and_get(store):
    key = f"cfg-{os.getpid()}-{free_port()}"
    assert store.put(key, b"x" * 5000) == 0
    assert store.get(key) == b"x" * 5000
    assert store.remove(key) == 0


@pytest.mark.parametrize("protocol", ["host_shm", "host_tcp"])
def test_setup_then_init_joins_the_configured_pool(meta_url, monkeypatch, protocol):
    # The environment names no pool (or a wrong one): setup's config wins.
    monkeypatch.setenv("MMC_CLIENT_DISCOVERY_URL", "tcp://127.0.0.1:1")
    store = DistributedObjectStore()
    assert store.setup(local_config(meta_url, protocol)) == 0
    assert store.init(0) == 0
    try:
        put_and_get(store)
    finally:
        assert store.close() == 0


def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("MMC_"):
            monkeypatch.delenv(name)


def test_local_config_path_in_1_3_0s_format(meta_url, monkeypatch, tmp_path):
    clean_env(monkeypatch)
    path = tmp_path / "mmc-local.conf"
    # As the peers' scripts write it.
    path.write_text(textwrap.dedent(f"""\
        ## written like seed_env.sh
        ock.mmc.meta_service_url = {meta_url}
        ock.mmc.local_service.config_store_url = tcp://127.0.0.1:{free_port()}
        ock.mmc.log_level = error
        ock.mmc.local_service.world_size = 256
        ock.mmc.local_service.protocol = host_shm
        ock.mmc.local_service.dram.size = 64MB
        ock.mmc.local_service.hbm.size = 0
        ock.mmc.tls.enable = false
        ock.mmc.config_store.tls.enable = false
        ock.mmc.local_service.hcom.tls.enable = false
        """))
    monkeypatch.setenv("MMC_LOCAL_CONFIG_PATH", str(path))
    store = DistributedObjectStore()
    assert store.init(0) == 0
    try:
        put_and_get(store)
    finally:
        assert store.close() == 0


@pytest.mark.parametrize("line", [
    "ock.mmc.bogus = 1",                          # unknown key
    "ock.mmc.local_service.dram.size = 12XB",     # bad size
    "just words",                                 # not key = value
    "ock.mmc.local_service.protocol = host_rdma",  # cannot honour
    "ock.mmc.tls.enable = true",                  # cannot honour
])
def test_a_bad_local_config_file_fails_init_with_3000(monkeypatch, tmp_path, line):
    clean_env(monkeypatch)
    path = tmp_path / "mmc-local.conf"
    path.write_text(f"ock.mmc.local_service.protocol = host_shm\n{line}\n")
    monkeypatch.setenv("MMC_LOCAL_CONFIG_PATH", str(path))
    assert DistributedObjectStore().init(0) == -3000


@pytest.mark.parametrize("field,value", [
    ("protocol", "host_rdma"),
    ("protocol", "device_rdma"),
    ("protocol", "nonsense"),
    ("tls_enable", True),
    ("hcom_tls_enable", True),
    ("config_store_tls_enable", True),
    ("hbm_size", "plenty"),
    ("dram_size", "a lot"),
    ("client_timeout_seconds", -1),
])
def test_setup_refuses_what_it_cannot_honour(field, value):
    cfg = local_config("tcp://127.0.0.1:5000")
    setattr(cfg, field, value)
    store = DistributedObjectStore()
    assert store.setup(cfg) == -3000
    # 1.3.0's defaults ask for host_rdma: refused too, not silently replaced.
    assert store.setup(LocalConfig()) == -3000


def test_setup_takes_hbm_size_and_init_refuses_it_without_a_device_runtime(meta_url):
    # This build loads no device runtime, so the HBM the client would contribute
    # cannot be allocated; the embedded pool has none either.
    for url in (meta_url, ""):
        cfg = local_config(url)
        cfg.hbm_size = "64MB"
        store = DistributedObjectStore()
        assert store.setup(cfg) == 0, url
        assert store.init(0) == -3000, url


@pytest.mark.parametrize("field,value", [
    ("ha_enable", True),
    ("tls_enable", True),
    ("config_store_tls_enable", True),
    ("kv_events_enable", True),
    ("lru_shard_count", 3),
    ("evict_threshold_high", 101),
    ("metrics_url", "ftp://x"),
])
def test_meta_setup_refuses_what_it_cannot_honour(field, value):
    cfg = MetaConfig()
    setattr(cfg, field, value)
    assert MetaService.setup(cfg) == -3000
    assert MetaService.setup(MetaConfig()) == 0


def serve(code, env):
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, line


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def check_meta(url, http_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=10) as r:
        assert r.read().strip() == b"OK"
    store = DistributedObjectStore()
    assert store.setup(local_config(url)) == 0
    assert store.init(0) == 0
    try:
        put_and_get(store)
    finally:
        assert store.close() == 0


def test_meta_setup_then_main_serves_on_the_configured_url():
    url, http = f"tcp://127.0.0.1:{free_port()}", free_port()
    code = textwrap.dedent(f"""\
        from memcache_hybrid import MetaConfig, MetaService
        cfg = MetaConfig()
        cfg.meta_service_url = "{url}"
        cfg.metrics_url = "http://127.0.0.1:{http}"
        cfg.evict_threshold_high = 85
        assert MetaService.setup(cfg) == 0
        raise SystemExit(MetaService.main())
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    # The environment's settings do not override setup's.
    env["MMC_META_DISCOVERY_URL"] = "tcp://127.0.0.1:1"
    proc, line = serve(code, env)
    try:
        assert line.strip() == f"meta service listening on {url}"
        check_meta(url, http)
    finally:
        stop(proc)


def test_meta_config_path_in_1_3_0s_format(tmp_path):
    url, http = f"tcp://127.0.0.1:{free_port()}", free_port()
    path = tmp_path / "mmc-meta.conf"
    path.write_text(textwrap.dedent(f"""\
        ock.mmc.meta_service_url = {url}
        ock.mmc.meta_service.config_store_url = tcp://127.0.0.1:{free_port()}
        ock.mmc.meta_service.metrics_url = http://127.0.0.1:{http}
        ock.mmc.log_level = error
        ock.mmc.log_path = {tmp_path}/logs
        ock.mmc.tls.enable = false
        ock.mmc.config_store.tls.enable = false
        ock.mmc.metrics.tls.enable = false
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    env["MMC_META_CONFIG_PATH"] = str(path)
    code = "from memcache_hybrid import MetaService; raise SystemExit(MetaService.main())"
    proc, line = serve(code, env)
    try:
        assert line.strip() == f"meta service listening on {url}"
        check_meta(url, http)
    finally:
        stop(proc)


def test_a_bad_meta_config_file_fails_main_with_3000(tmp_path):
    path = tmp_path / "mmc-meta.conf"
    path.write_text("ock.mmc.meta_service_url = tcp://127.0.0.1:0\nock.mmc.meta.ha.enable = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
    env["MMC_META_CONFIG_PATH"] = str(path)
    code = "from memcache_hybrid import MetaService; print(MetaService.main())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "-3000"
    assert "ha.enable" in out.stderr


def test_a_tls_pool_serves_a_client_with_a_good_certificate_and_no_other(tmp_path):
    """A pool of `mmc meta` and `mmc local` processes under mutual TLS, certificates from
    `mmc certs`; a client configured with 1.3.0's tls fields puts and gets over the TLS
    control and data planes, one without TLS is refused."""
    from conftest import mmc
    certs = tmp_path / "certs"
    subprocess.run([mmc(), "certs", "--dir", str(certs)], check=True, stdout=subprocess.DEVNULL)

    def tls(role):
        return ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / f"{role}.crt"),
                "--tls-key", str(certs / f"{role}.key")]

    url = f"tcp://127.0.0.1:{free_port()}"
    meta = subprocess.Popen([mmc(), "meta", "--discovery", url, *tls("meta")],
                            stdout=subprocess.PIPE, text=True)
    local = None
    try:
        assert "listening" in meta.stdout.readline()
        local = subprocess.Popen([mmc(), "local", "--discovery", url, "--dram-size", "64MiB",
                                  "--service-id", "400", *tls("local")],
                                 stdout=subprocess.PIPE, text=True)
        assert "local service" in local.stdout.readline()
        # In a process of its own: TLS settings are the process's once one is set, and
        # the other tests' pools are plaintext.
        code = textwrap.dedent(f"""\
            from memcache_hybrid import DistributedObjectStore, LocalConfig

            def client(tls_on):
                cfg = LocalConfig()
                cfg.meta_service_url = {url!r}
                cfg.protocol = "host_tcp"
                cfg.dram_size = "64MB"
                cfg.hbm_size = "0"
                cfg.tls_enable = tls_on
                if tls_on:
                    cfg.tls_ca_path = {str(certs / "ca.pem")!r}
                    cfg.tls_cert_path = {str(certs / "client.crt")!r}
                    cfg.tls_key_path = {str(certs / "client.key")!r}
                store = DistributedObjectStore()
                assert store.setup(cfg) == 0
                return store

            # Plaintext first: once TLS is set it is the process's.
            plain = client(False)
            assert plain.init(0) != 0, "a plaintext client was let in"
            plain.close()
            store = client(True)
            assert store.init(0) == 0
            assert store.put("tls-key", b"x" * 5000) == 0
            assert store.get("tls-key") == b"x" * 5000
            assert store.remove("tls-key") == 0
            assert store.close() == 0
            print("ok")
            """)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMC_")}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    finally:
        for p in (local, meta):
            if p is not None:
                p.kill()
                p.wait()
