//! Integration tests of the MemCache Hybrid client API. The tests live in `tests/*.rs`
//! and use only the public API of `memcache-client`; this library holds test helpers
//! they share, such as the [`linearizability`] checker for concurrent histories, and
//! the [`values`] a put writes so that a read can tell whose bytes it got.

pub mod linearizability;
pub mod values;
