//! The passphrase decrypter of 1.3.0: a C library named by `decrypter_lib_path` that
//! exports `int DecryptPassword(const char *cipher, size_t cipherLen, char *plain,
//! size_t plainCap)`; it writes the passphrase, NUL-terminated, into `plain` (of
//! `plainCap` bytes) and returns 0 on success.

use std::path::Path;

use memcache_core::{Error, Result};

type DecryptPassword = unsafe extern "C" fn(
    cipher: *const std::ffi::c_char,
    cipher_len: usize,
    plain: *mut std::ffi::c_char,
    plain_cap: usize,
) -> std::ffi::c_int;

/// Room given to the decrypted passphrase.
const PLAIN_CAP: usize = 4096;

pub(crate) fn decrypt(lib: &Path, cipher: &[u8]) -> Result<String> {
    let fail = |e: String| Error::invalid(format!("decrypter {}: {e}", lib.display()));
    // SAFETY: loading runs the library's initialisers; the operator named this library
    // as the decrypter to use, as 1.3.0 loads it.
    let library = unsafe { libloading::Library::new(lib) }.map_err(|e| fail(e.to_string()))?;
    // SAFETY: the symbol's type is the one 1.3.0 documents for `DecryptPassword`.
    let f = unsafe { library.get::<DecryptPassword>(b"DecryptPassword\0") }
        .map_err(|e| fail(e.to_string()))?;
    let mut cipher_z = cipher.to_vec();
    cipher_z.push(0);
    let mut plain = vec![0u8; PLAIN_CAP];
    // SAFETY: `cipher_z` holds `cipher.len()` bytes and a NUL; `plain` is writable for
    // PLAIN_CAP bytes; both outlive the call, and the library stays loaded during it.
    let rc = unsafe {
        f(
            cipher_z.as_ptr().cast(),
            cipher.len(),
            plain.as_mut_ptr().cast(),
            PLAIN_CAP,
        )
    };
    if rc != 0 {
        return Err(fail(format!("DecryptPassword returned {rc}")));
    }
    let end = plain.iter().position(|b| *b == 0).unwrap_or(PLAIN_CAP);
    plain.truncate(end);
    String::from_utf8(plain).map_err(|e| fail(e.to_string()))
}
