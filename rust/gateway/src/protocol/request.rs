//! Parsed requests.

use std::borrow::Cow;

/// The keys of a multi-key read, borrowed from the buffer. (A `SmallVec` would save
/// the one allocation, but it is invariant in `'a`, which requests cannot be.)
pub type Keys<'a> = Vec<Cow<'a, [u8]>>;

fn own(bytes: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
    Cow::Owned(bytes.into_owned())
}

fn own_all(keys: Keys<'_>) -> Keys<'static> {
    keys.into_iter().map(own).collect()
}

/// One client request. Keys are raw bytes (meta keys already base64-decoded); exptimes
/// are as sent: 0 never expires, up to 30 days is relative, beyond that a Unix time, and
/// negative is already expired. A data block is borrowed from the buffer the request
/// was parsed from, so a value is not copied on its way to the pool; so are keys but
/// base64-encoded meta keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `get` (and the ancient `bget`), or `gets` when `cas`.
    Get {
        keys: Keys<'a>,
        cas: bool,
    },
    /// `gat`, or `gats` when `cas`. memcached accepts an empty key list and answers `END`.
    GetAndTouch {
        exptime: i64,
        keys: Keys<'a>,
        cas: bool,
    },
    /// A `gat`/`gats` with a bad key after `keys`: memcached has touched those by the
    /// time it meets the bad one, then answers only `CLIENT_ERROR bad command line
    /// format`.
    TouchThenRefuse {
        exptime: i64,
        keys: Keys<'a>,
    },
    /// `set`, `add`, `replace`, `append`, `prepend` and `cas`. `append` and `prepend`
    /// carry flags and exptime too, which memcached ignores.
    Store {
        command: StoreCommand,
        key: Cow<'a, [u8]>,
        flags: u32,
        exptime: i64,
        data: Cow<'a, [u8]>,
        noreply: bool,
    },
    Delete {
        key: Cow<'a, [u8]>,
        noreply: bool,
    },
    Incr {
        key: Cow<'a, [u8]>,
        delta: u64,
        noreply: bool,
    },
    Decr {
        key: Cow<'a, [u8]>,
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: Cow<'a, [u8]>,
        exptime: i64,
        noreply: bool,
    },
    /// `flush_all [delay]`; a delay of 0 or less flushes now.
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    /// `stats [args]`; memcached answers `ERROR` for arguments it doesn't know.
    Stats {
        args: Vec<String>,
    },
    Version,
    /// `cache_memlimit <megabytes>` with an argument memcached would try to apply.
    MemLimit {
        megabytes: u32,
        noreply: bool,
    },
    /// A command answered with one fixed line, memcached's own text for it
    /// (`shutdown`, `cache_memlimit`, `lru_crawler`, `watch` arguments it refuses).
    Answer {
        line: &'static str,
        noreply: bool,
    },
    /// `watch`: memcached answers `OK` and turns the connection into a log stream,
    /// reading no more commands. The gateway has no such log: the stream stays empty.
    /// `known`: every argument is a log type memcached knows (else `ERROR`).
    Watch {
        known: bool,
        noreply: bool,
    },
    Verbosity {
        level: u32,
        noreply: bool,
    },
    Quit,
    /// `mg`.
    MetaGet {
        key: Cow<'a, [u8]>,
        flags: MetaFlags,
    },
    /// `ms`; the mode is the `M` flag.
    MetaSet {
        key: Cow<'a, [u8]>,
        data: Cow<'a, [u8]>,
        flags: MetaFlags,
    },
    /// `md`.
    MetaDelete {
        key: Cow<'a, [u8]>,
        flags: MetaFlags,
    },
    /// `ma`; mode, delta and initial value are the `M`, `D` and `J` flags.
    MetaArithmetic {
        key: Cow<'a, [u8]>,
        flags: MetaFlags,
    },
    /// `mn`: memcached answers `MN` and flushes its replies.
    MetaNoop,
    /// `me <key>`; `base64` when the key was sent encoded (`me <key> b`).
    MetaDebug {
        key: Cow<'a, [u8]>,
        base64: bool,
    },
}

impl Request<'_> {
    /// The request with its data block copied out of the buffer it was parsed from.
    pub fn into_owned(self) -> Request<'static> {
        use Request::*;
        match self {
            Store {
                command,
                key,
                flags,
                exptime,
                data,
                noreply,
            } => Store {
                command,
                key: own(key),
                flags,
                exptime,
                data: own(data),
                noreply,
            },
            MetaSet { key, data, flags } => MetaSet {
                key: own(key),
                data: own(data),
                flags,
            },
            Get { keys, cas } => Get {
                keys: own_all(keys),
                cas,
            },
            GetAndTouch { exptime, keys, cas } => GetAndTouch {
                exptime,
                keys: own_all(keys),
                cas,
            },
            TouchThenRefuse { exptime, keys } => TouchThenRefuse {
                exptime,
                keys: own_all(keys),
            },
            Delete { key, noreply } => Delete {
                key: own(key),
                noreply,
            },
            Incr {
                key,
                delta,
                noreply,
            } => Incr {
                key: own(key),
                delta,
                noreply,
            },
            Decr {
                key,
                delta,
                noreply,
            } => Decr {
                key: own(key),
                delta,
                noreply,
            },
            Touch {
                key,
                exptime,
                noreply,
            } => Touch {
                key: own(key),
                exptime,
                noreply,
            },
            FlushAll { delay, noreply } => FlushAll { delay, noreply },
            Stats { args } => Stats { args },
            Version => Version,
            MemLimit { megabytes, noreply } => MemLimit { megabytes, noreply },
            Answer { line, noreply } => Answer { line, noreply },
            Watch { known, noreply } => Watch { known, noreply },
            Verbosity { level, noreply } => Verbosity { level, noreply },
            Quit => Quit,
            MetaGet { key, flags } => MetaGet {
                key: own(key),
                flags,
            },
            MetaDelete { key, flags } => MetaDelete {
                key: own(key),
                flags,
            },
            MetaArithmetic { key, flags } => MetaArithmetic {
                key: own(key),
                flags,
            },
            MetaNoop => MetaNoop,
            MetaDebug { key, base64 } => MetaDebug {
                key: own(key),
                base64,
            },
        }
    }
}

/// Which storage command a [`Request::Store`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCommand {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    /// `cas`, with the CAS unique the item must still have.
    Cas(u64),
}

/// One meta flag: its letter and what follows it in the same token, if anything
/// (`O123` is `O` with `123`; `v` has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaFlag {
    pub flag: u8,
    pub token: Option<Vec<u8>>,
}

impl MetaFlag {
    pub fn new(flag: u8, token: Option<&[u8]>) -> Self {
        MetaFlag {
            flag,
            token: token.map(<[u8]>::to_vec),
        }
    }
}

/// A meta request's flags in the order sent (memcached returns flags in that order).
/// Each letter appears at most once, and numeric tokens were checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaFlags(pub Vec<MetaFlag>);

impl MetaFlags {
    pub fn iter(&self) -> std::slice::Iter<'_, MetaFlag> {
        self.0.iter()
    }

    pub fn has(&self, flag: u8) -> bool {
        self.iter().any(|f| f.flag == flag)
    }

    /// The token of `flag`, when present and carrying one.
    pub fn token(&self, flag: u8) -> Option<&[u8]> {
        self.iter()
            .find(|f| f.flag == flag)
            .and_then(|f| f.token.as_deref())
    }

    /// The token of `flag` as memcached reads it: `T`, `N`, `R` (i32), `F` (u32), `C`,
    /// `E`, `D`, `J` (u64).
    pub fn number<T: super::args::CNumber>(&self, flag: u8) -> Option<T> {
        super::args::number(self.token(flag)?)
    }

    /// `q`: memcached leaves out the nominal reply (`EN` for `mg`, `HD` for the others)
    /// but still sends errors.
    pub fn quiet(&self) -> bool {
        self.has(b'q')
    }

    /// `O`: the opaque token to echo back.
    pub fn opaque(&self) -> Option<&[u8]> {
        self.token(b'O')
    }

    /// `b`: the key arrived base64-encoded and must go back encoded (see
    /// [`MetaLine::key`](super::MetaLine::key)).
    pub fn base64_key(&self) -> bool {
        self.has(b'b')
    }

    /// The `M` mode letter of `ms` (`E`, `A`, `P`, `R`, `S`) or `ma` (`I`, `+`, `D`,
    /// `-`), already checked for those commands.
    pub fn mode(&self) -> Option<u8> {
        self.token(b'M').map(|t| t[0])
    }
}

impl FromIterator<MetaFlag> for MetaFlags {
    fn from_iter<I: IntoIterator<Item = MetaFlag>>(iter: I) -> Self {
        MetaFlags(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_accessors() {
        let flags: MetaFlags = [
            MetaFlag::new(b'v', None),
            MetaFlag::new(b'O', Some(b"op1")),
            MetaFlag::new(b'T', Some(b"-5")),
            MetaFlag::new(b'q', None),
            MetaFlag::new(b'M', Some(b"E")),
        ]
        .into_iter()
        .collect();
        assert!(flags.has(b'v') && flags.quiet() && !flags.base64_key());
        assert_eq!(flags.opaque(), Some(&b"op1"[..]));
        assert_eq!(flags.number::<i32>(b'T'), Some(-5));
        assert_eq!(flags.number::<u64>(b'T'), None);
        assert_eq!(flags.number::<u64>(b'C'), None);
        assert_eq!(flags.token(b'v'), None);
        assert_eq!(flags.mode(), Some(b'E'));
        assert_eq!(
            flags.iter().map(|f| f.flag).collect::<Vec<_>>(),
            b"vOTqM".to_vec()
        );
    }
}
