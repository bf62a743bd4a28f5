//! Configuration in layers: defaults, then a TOML file, then environment variables,
//! then `--set key=value` flags. Every key of every config can be set each way; the
//! spec's names (`discoveryURL`, `evictThresholdHigh`, …) are accepted as aliases.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

use memcache_core::{Error, Result};

/// Builds a `T` from its defaults, the TOML file at `path`, the environment variables
/// that start with `env_prefix` (`MMC_META_EVICT_THRESHOLD_HIGH=80` sets
/// `evict_threshold_high`; a nested key such as `meta.put_lease` is written
/// `MMC_CLIENT_META__PUT_LEASE`), and `sets` (`key=value`, dotted keys for nesting).
/// Values are read as TOML (`80`, `true`, `"text"`), or as a plain string if that fails.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    path: Option<&Path>,
    env_prefix: &str,
    sets: &[String],
) -> Result<T> {
    // Only what is set goes in the table; serde fills in the defaults. The defaults'
    // keys tell which spelling of a key is the canonical one.
    let canonical = Table::try_from(T::default())
        .map_err(|e| Error::Failed(format!("default configuration: {e}")))?;
    let mut table = Table::new();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        let file: Table = text
            .parse()
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        table = canonicalize(file, &canonical);
    }
    apply(table, env_prefix, sets)
}

/// `base`, then the environment variables that start with `env_prefix` and `sets`, as
/// in [`load`]: how a configuration from another source (1.3.0's files) still honours
/// the `MMC_*_` variables and `--set`.
pub fn overlay<T: Serialize + DeserializeOwned>(
    base: T,
    env_prefix: &str,
    sets: &[String],
) -> Result<T> {
    let table = Table::try_from(base).map_err(|e| Error::Failed(format!("configuration: {e}")))?;
    apply(table, env_prefix, sets)
}

fn apply<T: DeserializeOwned>(mut table: Table, env_prefix: &str, sets: &[String]) -> Result<T> {
    for (key, value) in env_pairs(env_prefix) {
        set(&mut table, &key, &value);
    }
    for s in sets {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("--set {s:?} is not key=value")))?;
        set(&mut table, key.trim(), value.trim());
    }
    table
        .try_into()
        .map_err(|e: toml::de::Error| Error::invalid(format!("configuration: {}", e.message())))
}

/// The variables that start with `env_prefix`, as dotted lower-case keys, sorted.
fn env_pairs(env_prefix: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(env_prefix)?;
            Some((key.to_ascii_lowercase().replace("__", "."), v))
        })
        .collect();
    env.sort();
    env
}

/// Renames camelCase keys (`evictThresholdHigh`) to their snake_case field
/// (`evict_threshold_high`) where that field exists, so a later environment variable
/// or `--set` of the same key replaces it instead of clashing with it. Other aliases
/// are left for serde to match.
fn canonicalize(file: Table, canonical: &Table) -> Table {
    file.into_iter()
        .map(|(k, v)| {
            let key = if canonical.contains_key(&k) || !canonical.contains_key(&snake(&k)) {
                k
            } else {
                snake(&k)
            };
            let v = match (v, canonical.get(&key)) {
                (Value::Table(t), Some(Value::Table(c))) => Value::Table(canonicalize(t, c)),
                (v, _) => v,
            };
            (key, v)
        })
        .collect()
}

fn snake(k: &str) -> String {
    let mut out = String::with_capacity(k.len() + 4);
    let mut prev_lower = false;
    for c in k.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn set(table: &mut Table, dotted: &str, raw: &str) {
    let value = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()));
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut at = table;
    for p in parts {
        let entry = at
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        at = entry.as_table_mut().expect("made a table above");
    }
    at.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Inner {
        lease_ms: u64,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Conf {
        #[serde(alias = "discoveryURL")]
        discovery_url: String,
        high: u16,
        inner: Inner,
    }

    #[test]
    fn layers_apply_in_order_and_aliases_work() {
        let dir = std::env::temp_dir().join(format!("mmc-layered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "discoveryURL = \"tcp://1.2.3.4:5\"\nhigh = 70\n[inner]\nlease_ms = 9\n",
        )
        .unwrap();
        let c: Conf = load(Some(&file), "MMC_TEST_UNSET_", &[]).unwrap();
        assert_eq!(c.discovery_url, "tcp://1.2.3.4:5");
        assert_eq!((c.high, c.inner.lease_ms), (70, 9));
        let sets = ["high=80".to_string(), "inner.lease_ms = 12".to_string()];
        let c: Conf = load(Some(&file), "MMC_TEST_UNSET_", &sets).unwrap();
        assert_eq!((c.high, c.inner.lease_ms), (80, 12));
        // The canonical name overrides the file's spec spelling of the same key.
        let url = ["discovery_url=\"tcp://9.9.9.9:9\"".to_string()];
        let c: Conf = load(Some(&file), "MMC_TEST_UNSET_", &url).unwrap();
        assert_eq!(c.discovery_url, "tcp://9.9.9.9:9");
        assert_eq!(snake("evictThresholdHigh"), "evict_threshold_high");
        assert_eq!(snake("discoveryURL"), "discovery_url");
        assert!(load::<Conf>(None, "MMC_TEST_UNSET_", &["high=loud".into()]).is_err());
        assert!(load::<Conf>(None, "MMC_TEST_UNSET_", &["nokey".into()]).is_err());
        assert_eq!(
            load::<Conf>(Some(&dir.join("missing.toml")), "X_", &[])
                .unwrap_err()
                .code(),
            -3000
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlay_keeps_the_base_and_applies_sets() {
        let base = Conf {
            discovery_url: "tcp://1.2.3.4:5".into(),
            high: 70,
            inner: Inner { lease_ms: 9 },
        };
        let c: Conf = overlay(base, "MMC_TEST_UNSET_", &["inner.lease_ms=3".into()]).unwrap();
        assert_eq!(c.discovery_url, "tcp://1.2.3.4:5");
        assert_eq!((c.high, c.inner.lease_ms), (70, 3));
        let full = crate::ClientConfig::from_seed(
            &memcache_core::seed_config::SeedConfig::parse(
                memcache_core::seed_config::SeedRole::Local,
                "ock.mmc.local_service.protocol = host_shm\n",
            )
            .unwrap(),
        )
        .unwrap();
        let back: crate::ClientConfig = overlay(full.clone(), "MMC_TEST_UNSET_", &[]).unwrap();
        assert_eq!(back, full);
    }
}
