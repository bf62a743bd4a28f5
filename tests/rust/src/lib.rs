//! Integration tests of the MemCache Hybrid client API. This library is empty: the
//! tests live in `tests/*.rs` and use only the public API of `memcache-client`.
