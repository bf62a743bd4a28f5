//! A memcached-compatible front end to MemCache Hybrid. This first step holds the
//! protocol layer only: parsing requests and encoding replies, with no storage or I/O.

pub mod protocol;
