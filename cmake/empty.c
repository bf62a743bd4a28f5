/* The shared library is the Rust archive, linked whole; it needs one source. */
