//! A memcached-compatible front end to MemCache Hybrid: the protocol layer (parsing
//! requests, encoding replies) and memcached's item semantics on the pool.

pub mod items;
mod meta_commands;
pub mod protocol;
pub mod server;

pub use server::Gateway;
