//! The one error enum of MemCache Hybrid. Each variant carries exactly one of the API's
//! numeric codes; `code()` is what crosses the FFI edge and the wire.

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure a MemCache call can report. Variants that need context carry a short
/// message; the numeric code never depends on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    #[error("operation failed: {0}")]
    Failed(String),
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    #[error("memory allocation failed")]
    MallocFailed,
    #[error("object creation failed")]
    NewObjectFailed,
    #[error("service not started")]
    NotStarted,
    #[error("operation timed out: {0}")]
    Timeout(String),
    #[error("repeated call: {0}")]
    RepeatCall(String),
    #[error("object already exists")]
    DuplicatedObject,
    #[error("object not found")]
    ObjectNotFound,
    #[error("not initialized")]
    NotInitialized,
    #[error("duplicated network sequence number")]
    NetSeqDuplicated,
    #[error("network sequence number not found")]
    NetSeqNotFound,
    #[error("already notified")]
    AlreadyNotified,
    #[error("capacity limit exceeded: {0}")]
    OutOfCapacity(String),
    #[error("connection not found")]
    ConnectionNotFound,
    #[error("network request handle not found")]
    NetReqHandleNotFound,
    #[error("not enough space in the pool: {0}")]
    OutOfMemory(String),
    #[error("not connected to the meta service")]
    NotConnectedToMeta,
    #[error("not connected to a local service")]
    NotConnectedToLocal,
    #[error("client not initialized")]
    ClientNotInitialized,
    #[error("state mismatch: {0}")]
    UnmatchedState(String),
    #[error("key mismatch")]
    UnmatchedKey,
    #[error("return value mismatch")]
    UnmatchedRetcode,
    #[error("object is leased by a reader")]
    LeaseNotExpired,
    /// 1.3.0's code for a pool address used after its allocation's or read lease's end.
    #[error("lease expired: {0}")]
    LeaseExpired(String),
}

impl Error {
    /// The API's numeric code for this error (see `shared/spec`).
    pub const fn code(&self) -> i32 {
        match self {
            Error::Failed(_) => -1,
            Error::InvalidParam(_) => -3000,
            Error::MallocFailed => -3001,
            Error::NewObjectFailed => -3002,
            Error::NotStarted => -3003,
            Error::Timeout(_) => -3004,
            Error::RepeatCall(_) => -3005,
            Error::DuplicatedObject => -3006,
            Error::ObjectNotFound => -3007,
            Error::NotInitialized => -3008,
            Error::NetSeqDuplicated => -3009,
            Error::NetSeqNotFound => -3010,
            Error::AlreadyNotified => -3011,
            Error::OutOfCapacity(_) => -3013,
            Error::ConnectionNotFound => -3014,
            Error::NetReqHandleNotFound => -3015,
            Error::OutOfMemory(_) => -3016,
            Error::NotConnectedToMeta => -3017,
            Error::NotConnectedToLocal => -3018,
            Error::ClientNotInitialized => -3019,
            Error::UnmatchedState(_) => -3101,
            Error::UnmatchedKey => -3102,
            Error::UnmatchedRetcode => -3103,
            Error::LeaseNotExpired => -3104,
            Error::LeaseExpired(_) => -3106,
        }
    }

    /// The error for a numeric code, as read back from a peer or a C caller. `0` and
    /// unknown codes give `None`.
    pub fn from_code(code: i32) -> Option<Error> {
        Some(match code {
            -1 => Error::Failed(String::new()),
            -3000 => Error::InvalidParam(String::new()),
            -3001 => Error::MallocFailed,
            -3002 => Error::NewObjectFailed,
            -3003 => Error::NotStarted,
            -3004 => Error::Timeout(String::new()),
            -3005 => Error::RepeatCall(String::new()),
            -3006 => Error::DuplicatedObject,
            -3007 => Error::ObjectNotFound,
            -3008 => Error::NotInitialized,
            -3009 => Error::NetSeqDuplicated,
            -3010 => Error::NetSeqNotFound,
            -3011 => Error::AlreadyNotified,
            -3013 => Error::OutOfCapacity(String::new()),
            -3014 => Error::ConnectionNotFound,
            -3015 => Error::NetReqHandleNotFound,
            -3016 => Error::OutOfMemory(String::new()),
            -3017 => Error::NotConnectedToMeta,
            -3018 => Error::NotConnectedToLocal,
            -3019 => Error::ClientNotInitialized,
            -3101 => Error::UnmatchedState(String::new()),
            -3102 => Error::UnmatchedKey,
            -3103 => Error::UnmatchedRetcode,
            -3104 => Error::LeaseNotExpired,
            -3106 => Error::LeaseExpired(String::new()),
            _ => return None,
        })
    }

    /// The variant's name, for messages such as `ObjectNotFound (-3007)`.
    pub fn name(&self) -> &'static str {
        match self {
            Error::Failed(_) => "Failed",
            Error::InvalidParam(_) => "InvalidParam",
            Error::MallocFailed => "MallocFailed",
            Error::NewObjectFailed => "NewObjectFailed",
            Error::NotStarted => "NotStarted",
            Error::Timeout(_) => "Timeout",
            Error::RepeatCall(_) => "RepeatCall",
            Error::DuplicatedObject => "DuplicatedObject",
            Error::ObjectNotFound => "ObjectNotFound",
            Error::NotInitialized => "NotInitialized",
            Error::NetSeqDuplicated => "NetSeqDuplicated",
            Error::NetSeqNotFound => "NetSeqNotFound",
            Error::AlreadyNotified => "AlreadyNotified",
            Error::OutOfCapacity(_) => "OutOfCapacity",
            Error::ConnectionNotFound => "ConnectionNotFound",
            Error::NetReqHandleNotFound => "NetReqHandleNotFound",
            Error::OutOfMemory(_) => "OutOfMemory",
            Error::NotConnectedToMeta => "NotConnectedToMeta",
            Error::NotConnectedToLocal => "NotConnectedToLocal",
            Error::ClientNotInitialized => "ClientNotInitialized",
            Error::UnmatchedState(_) => "UnmatchedState",
            Error::UnmatchedKey => "UnmatchedKey",
            Error::UnmatchedRetcode => "UnmatchedRetcode",
            Error::LeaseNotExpired => "LeaseNotExpired",
            Error::LeaseExpired(_) => "LeaseExpired",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidParam(msg.into())
    }
}

/// `0` for success, the error's code otherwise: the form every FFI entry returns.
pub fn code_of<T>(result: &Result<T>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

/// What 1.3.0's front ends answer for a put: as [`code_of`], except that a key that
/// exists already is 0 — the first value stays, and engines that store the same
/// block twice (two workers computing one prefix) take that as success.
pub fn put_code(result: &Result<()>) -> i32 {
    match result {
        Err(Error::DuplicatedObject) => 0,
        r => code_of(r),
    }
}

/// Runs `f` at a foreign boundary (C, C++, Python): a panic becomes `on_panic`, so
/// nothing unwinds into the caller's runtime.
pub fn catch_panic<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(on_panic)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CODES: [i32; 25] = [
        -1, -3000, -3001, -3002, -3003, -3004, -3005, -3006, -3007, -3008, -3009, -3010, -3011,
        -3013, -3014, -3015, -3016, -3017, -3018, -3019, -3101, -3102, -3103, -3104, -3106,
    ];

    #[test]
    fn codes_round_trip_and_match_the_spec_table() {
        for code in ALL_CODES {
            let err = Error::from_code(code).expect("spec code");
            assert_eq!(err.code(), code, "{err}");
        }
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(-3012), None);
        assert_eq!(Error::from_code(-3100), None);
    }

    #[test]
    fn a_put_of_an_existing_key_answers_zero() {
        assert_eq!(put_code(&Err(Error::DuplicatedObject)), 0);
        assert_eq!(put_code(&Err(Error::ObjectNotFound)), -3007);
        assert_eq!(put_code(&Ok(())), 0);
    }

    #[test]
    fn code_of_maps_ok_to_zero() {
        assert_eq!(code_of(&Ok::<(), Error>(())), 0);
        assert_eq!(code_of::<()>(&Err(Error::ObjectNotFound)), -3007);
    }
}
