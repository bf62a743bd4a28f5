// Generates the C++ side of the bridge and compiles it, with the C++ shim in cpp/src,
// into this crate, so libmemcache.a carries both.
fn main() {
    cxx_build::bridge("src/lib.rs")
        .file("../cpp/src/abi.cpp")
        .include("../cpp/include")
        .flag_if_supported("-std=c++17")
        .flag_if_supported("-fvisibility=hidden")
        .compile("memcache-cxx");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=../cpp/src/abi.cpp");
    println!("cargo:rerun-if-changed=../cpp/include/memcache/detail/abi.h");
}
