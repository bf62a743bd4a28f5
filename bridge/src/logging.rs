//! Our `tracing` output for C and C++ hosts: forwarded to the logger callback set with
//! `mmc_set_extern_logger`, or printed to standard output, at the level of
//! `mmc_set_log_level` (0 DEBUG, 1 INFO, 2 WARN, 3 ERROR).

use std::ffi::{c_char, c_int, CString};
use std::fmt::Write as _;
use std::sync::{OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

use memcache_client::Error;

use crate::c_api::LogFunc;

static LOGGER: RwLock<LogFunc> = RwLock::new(None);
type LevelHandle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;
static LEVEL: OnceLock<Option<LevelHandle>> = OnceLock::new();

fn filter(level: c_int) -> Option<LevelFilter> {
    Some(match level {
        0 => LevelFilter::DEBUG,
        1 => LevelFilter::INFO,
        2 => LevelFilter::WARN,
        3 => LevelFilter::ERROR,
        _ => return None,
    })
}

/// Installs the forwarding subscriber once (unless the host already installed one),
/// then applies `level` and `func` when given.
pub fn init(level: c_int, func: LogFunc) {
    LEVEL.get_or_init(|| {
        let (level, handle) = reload::Layer::new(LevelFilter::WARN);
        let installed = tracing_subscriber::registry()
            .with(level)
            .with(Forward)
            .try_init()
            .is_ok();
        installed.then_some(handle)
    });
    let _ = set_level(level);
    if func.is_some() {
        set_logger(func);
    }
}

pub fn set_logger(func: LogFunc) {
    init_default();
    *LOGGER.write().unwrap_or_else(|e| e.into_inner()) = func;
}

pub fn set_level(level: c_int) -> Result<(), Error> {
    let f =
        filter(level).ok_or_else(|| Error::invalid(format!("log level {level} is not 0..=3")))?;
    init_default();
    if let Some(Some(handle)) = LEVEL.get() {
        let _ = handle.modify(|l| *l = f);
    }
    Ok(())
}

fn init_default() {
    if LEVEL.get().is_none() {
        init(-1, None);
    }
}

struct Forward;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 2,
            Level::INFO => 1,
            _ => 0,
        };
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let logger = *LOGGER.read().unwrap_or_else(|e| e.into_inner());
        match logger {
            Some(f) => {
                let text = CString::new(msg.0.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the host registered `f` as `void (*)(int, const char *)` and
                // promised it may be called from any thread; `text` outlives the call.
                unsafe { f(level, text.as_ptr() as *const c_char) };
            }
            None => println!("[memcache {}] {}", event.metadata().level(), msg.0),
        }
    }
}
