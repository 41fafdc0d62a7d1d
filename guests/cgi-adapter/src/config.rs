//! What the wrapped app needs fixed, written into the adapter by `wasmbridge wrap`: a list of
//! `key NUL value NUL` pairs. Keys: `arg` (after the program name, in order), `env`
//! (`NAME=value`), `docroot` (the guest directory URL paths map into), `index` (a directory's
//! script, first found wins), `fallback` (the script for URLs that name none), `ext` (the
//! extension of the files that run as scripts), `program` (argv[0]).

use alloc::vec::Vec;

/// Replaced by `wasmbridge wrap` with code that writes the configuration to `dst` when `cap`
/// bytes hold it rounded up to whole 8-byte words, and returns its length. Volatile accesses keep the compiler from assuming
/// anything about what the real body does.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn wasmbridge_cgi_config(dst: *mut u8, cap: usize) -> usize {
    let _ = cap;
    unsafe {
        core::ptr::write_volatile(dst, 0);
        core::ptr::read_volatile(dst) as usize
    }
}

pub struct Config {
    bytes: Vec<u8>,
}

impl Config {
    pub fn load() -> Config {
        let mut bytes = Vec::with_capacity(1024);
        loop {
            let len = unsafe { wasmbridge_cgi_config(bytes.as_mut_ptr(), bytes.capacity()) };
            if len <= bytes.capacity() {
                unsafe { bytes.set_len(len) };
                return Config { bytes };
            }
            bytes.reserve(len.next_multiple_of(8));
        }
    }

    /// The values of `key`, in order.
    pub fn values<'a, 'k>(&'a self, key: &'k [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'k> {
        let mut parts = self.bytes.split(|b| *b == 0);
        core::iter::from_fn(move || {
            loop {
                let k = parts.next()?;
                let v = parts.next()?;
                if k == key {
                    return Some(v);
                }
            }
        })
    }

    pub fn value<'a>(&'a self, key: &[u8]) -> Option<&'a [u8]> {
        self.values(key).next()
    }
}
