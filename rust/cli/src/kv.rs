//! `mmc kv`: one-shot puts, gets and removes against a pool, as a client process.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use memcache_client::{BlockingObjectStore, ClientConfig, CopyDirection, ReplicateConfig};

#[derive(Args)]
pub struct KvArgs {
    /// The pool's meta service, `tcp://HOST:PORT[,…]`.
    #[arg(long, env = "MMC_DISCOVERY_URL")]
    discovery: String,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand)]
enum KvOp {
    /// Store standard input (or `--file`) under KEY.
    Put {
        key: String,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        replicas: u32,
    },
    /// Write KEY's bytes to standard output (or `--out`).
    Get {
        key: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Remove KEY.
    Remove { key: String },
}

pub fn run(args: KvArgs) -> Result<(), String> {
    let fail = |e: memcache_client::Error| format!("{e} (code {})", e.code());
    let store = BlockingObjectStore::new(ClientConfig::remote(&args.discovery, 0)).map_err(fail)?;
    store.init(0, false).map_err(fail)?;
    match args.op {
        KvOp::Put {
            key,
            file,
            replicas,
        } => {
            let data = match file {
                Some(p) => std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?,
                None => {
                    let mut v = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut v)
                        .map_err(|e| e.to_string())?;
                    v
                }
            };
            let cfg = ReplicateConfig::with_replicas(replicas);
            store
                .put_from(&key, &data, CopyDirection::H2G, &cfg)
                .map_err(fail)?;
        }
        KvOp::Get { key, out } => {
            let data = store.get(&key).map_err(fail)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, &data).map_err(|e| format!("{}: {e}", p.display()))?
                }
                None => std::io::stdout()
                    .write_all(&data)
                    .map_err(|e| e.to_string())?,
            }
        }
        KvOp::Remove { key } => store.remove(&key).map_err(fail)?,
    }
    store.tear_down().map_err(fail)
}
