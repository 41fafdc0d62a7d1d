//! Text without data segments. A string constant would be placed in the program's memory at
//! a fixed address; `lit!` instead builds it on the stack from 8-byte immediates, each one
//! computed at compile time and kept opaque so that the compiler cannot fold them back into
//! a constant in memory.

use alloc::vec::Vec;

/// Up to 128 bytes of text held by value.
pub struct Text {
    pub words: [u64; 16],
    pub len: usize,
}

impl core::ops::Deref for Text {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

/// Bytes `8 * i ..` of `s`, little-endian, as one word.
pub const fn word(s: &[u8], i: usize) -> u64 {
    let mut w = 0u64;
    let mut k = 0;
    while k < 8 {
        if 8 * i + k < s.len() {
            w |= (s[8 * i + k] as u64) << (8 * k);
        }
        k += 1;
    }
    w
}

/// A byte-string literal of up to 128 bytes, built on the stack: `&lit!(b"HTTP_")[..]`.
#[macro_export]
macro_rules! lit {
    ($s:literal) => {{
        const S: &[u8] = $s;
        const { assert!(S.len() <= 128) };
        #[allow(unused_mut)]
        let mut text = $crate::text::Text { words: [0; 16], len: S.len() };
        $crate::lit!(@words text S 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        text
    }};
    (@words $text:ident $s:ident $($i:literal)*) => {
        $(
            if $s.len() > 8 * $i {
                $text.words[$i] = ::core::hint::black_box(const { $crate::text::word($s, $i) });
            }
        )*
    };
}

/// `bytes` as text, when they are UTF-8: the check of `core::str::from_utf8`, which reads a
/// table in memory.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (len, min) = if b < 0x80 {
            (1, 0)
        } else if b & 0xE0 == 0xC0 {
            (2, 0x80)
        } else if b & 0xF0 == 0xE0 {
            (3, 0x800)
        } else if b & 0xF8 == 0xF0 {
            (4, 0x10000)
        } else {
            return None;
        };
        let mut c = if len == 1 {
            b as u32
        } else {
            (b & (0x7F >> len)) as u32
        };
        for k in 1..len {
            let next = *bytes.get(i + k)?;
            if next & 0xC0 != 0x80 {
                return None;
            }
            c = c << 6 | (next & 0x3F) as u32;
        }
        if c < min || c > 0x10FFFF || (0xD800..0xE000).contains(&c) {
            return None;
        }
        i += len;
    }
    Some(unsafe { core::str::from_utf8_unchecked(bytes) })
}

/// `n` in decimal.
pub fn decimal(mut n: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}

/// Appends `bytes` in double quotes, with quotes, backslashes and anything but printable ASCII
/// escaped (`\n`, `\x7f`), as a log line shows text that came from a program.
pub fn push_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(&[b'\\', b'n']),
            b'\r' => out.extend_from_slice(&[b'\\', b'r']),
            b'\t' => out.extend_from_slice(&[b'\\', b't']),
            0x20..=0x7e => out.push(b),
            _ => {
                let hex = |n: u8| if n < 10 { b'0' + n } else { b'a' + n - 10 };
                out.extend_from_slice(&[b'\\', b'x', hex(b >> 4), hex(b & 15)]);
            }
        }
    }
    out.push(b'"');
}
