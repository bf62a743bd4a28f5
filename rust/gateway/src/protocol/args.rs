//! Splitting a command line into tokens and checking them.

use super::Limits;

/// A command line's tokens: no command but a multi-key `get` has more than 8, so
/// nearly every line is split without a heap allocation.
pub(super) type Tokens<'a> = smallvec::SmallVec<[&'a [u8]; 8]>;

/// Splits on spaces only, runs of them included, as memcached's tokenizer does: a tab
/// is part of a token.
pub(super) fn tokenize(line: &[u8]) -> Tokens<'_> {
    line.split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect()
}

/// A key of at most `max_key_len` bytes without control characters (spaces can't be in
/// a token).
pub(super) fn valid_key(key: &[u8], limits: &Limits) -> bool {
    key.len() <= limits.max_key_len && !key.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// A number as memcached reads it with `safe_strtol`/`safe_strtoul`/`safe_strtoull`:
/// C's `strtol`/`strtoul` on a 64-bit long (leading whitespace, a sign, then digits,
/// which may be followed by whitespace or a NUL and anything after), then narrowed to
/// the field's C type without a range check. So `4294967296` is a flags value of 0 and
/// `4000000000` a negative exptime, as in memcached; `-1` is refused for the unsigned
/// ones only because memcached refuses a "negative" sign there.
pub(super) fn number<T: CNumber>(token: &[u8]) -> Option<T> {
    T::from_c(token)
}

/// The C integer types memcached parses tokens into.
pub trait CNumber: Sized {
    fn from_c(token: &[u8]) -> Option<Self>;
}

impl CNumber for i32 {
    fn from_c(token: &[u8]) -> Option<i32> {
        // memcached stores the long in an int32_t: narrowing, not checking.
        strtol(token).map(|l| l as i32)
    }
}

impl CNumber for u32 {
    fn from_c(token: &[u8]) -> Option<u32> {
        strtoul(token).map(|l| l as u32)
    }
}

impl CNumber for u64 {
    fn from_c(token: &[u8]) -> Option<u64> {
        strtoul(token)
    }
}

fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Whitespace, a sign, digits: (negative, magnitude, bytes used); `None` without
/// digits, or when the magnitude overflows (C's ERANGE, checked by the callers' range).
fn digits(token: &[u8]) -> Option<(bool, u128, usize)> {
    let mut at = token.iter().take_while(|&&b| c_space(b)).count();
    let negative = token.get(at) == Some(&b'-');
    if matches!(token.get(at), Some(b'-' | b'+')) {
        at += 1;
    }
    let start = at;
    let mut value: u128 = 0;
    while let Some(d) = token.get(at).filter(|b| b.is_ascii_digit()) {
        value = (value * 10 + u128::from(d - b'0')).min(u128::from(u64::MAX) + 1);
        at += 1;
    }
    if at == start {
        return None;
    }
    // What stops the digits must end the C string or be whitespace.
    match token.get(at) {
        None | Some(0) => {}
        Some(&b) if c_space(b) => {}
        Some(_) => return None,
    }
    Some((negative, value, at))
}

/// `safe_strtol`: a signed long.
fn strtol(token: &[u8]) -> Option<i64> {
    let (negative, magnitude, _) = digits(token)?;
    if negative {
        (magnitude <= 1 << 63).then(|| (magnitude as u64).wrapping_neg() as i64)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `safe_strtoul`/`safe_strtoull`: an unsigned long; a "-" is wrapped as C wraps it and
/// refused only when the result would be negative as a signed long.
fn strtoul(token: &[u8]) -> Option<u64> {
    let (negative, magnitude, _) = digits(token)?;
    let magnitude = u64::try_from(magnitude).ok()?;
    let value = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    (!(negative && (value as i64) < 0)).then_some(value)
}

/// memcached's rule: the last token of the line, if exactly "noreply".
pub(super) fn noreply(tokens: &[&[u8]]) -> bool {
    tokens.last() == Some(&&b"noreply"[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_splits_on_spaces_only() {
        assert_eq!(
            tokenize(b"  get  a\tb c ").as_slice(),
            [&b"get"[..], &b"a\tb"[..], &b"c"[..]]
        );
        assert!(tokenize(b"").is_empty());
        assert!(tokenize(b"   ").is_empty());
    }

    #[test]
    fn keys() {
        let limits = Limits::default();
        assert!(valid_key(b"user:42", &limits));
        assert!(valid_key("clé".as_bytes(), &limits));
        assert!(valid_key(&[b'k'; 250], &limits));
        assert!(!valid_key(&[b'k'; 251], &limits));
        assert!(!valid_key(b"a\tb", &limits));
        assert!(!valid_key(b"a\rb", &limits));
        assert!(!valid_key(b"a\x00b", &limits));
        assert!(!valid_key(b"a\x7fb", &limits));
    }

    #[test]
    fn numbers_read_as_memcached_reads_them() {
        assert_eq!(number::<u32>(b"4294967295"), Some(u32::MAX));
        // Narrowed, not refused: memcached stores the long in 32 bits.
        assert_eq!(number::<u32>(b"4294967296"), Some(0));
        assert_eq!(number::<i32>(b"4000000000"), Some(-294_967_296));
        assert_eq!(number::<i32>(b"2147483648"), Some(i32::MIN));
        assert_eq!(number::<u32>(b"-1"), None);
        assert_eq!(number::<u32>(b"-0"), Some(0));
        assert_eq!(number::<i32>(b"-1"), Some(-1));
        assert_eq!(number::<i32>(b"+7"), Some(7));
        assert_eq!(number::<i32>(b"9223372036854775808"), None);
        assert_eq!(number::<i32>(b"-9223372036854775808"), Some(0));
        assert_eq!(number::<u64>(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(number::<u64>(b"18446744073709551616"), None);
        assert_eq!(number::<u64>(b"-18446744073709551615"), Some(1));
        assert_eq!(number::<u64>(b"12ab"), None);
        assert_eq!(number::<u64>(b"0x10"), None);
        assert_eq!(number::<u64>(b"1.5"), None);
        assert_eq!(number::<u64>(b"-"), None);
        assert_eq!(number::<u64>(b""), None);
        // Whitespace before, whitespace or NUL (and anything) after.
        assert_eq!(number::<u64>(b"\t1"), Some(1));
        assert_eq!(number::<u64>(b"1\tx"), Some(1));
        assert_eq!(number::<u64>(b"1\0x"), Some(1));
        assert_eq!(number::<u64>(b"\xff"), None);
    }

    #[test]
    fn noreply_is_the_last_token() {
        assert!(noreply(&[b"set", b"k", b"noreply"]));
        assert!(!noreply(&[b"set", b"noreply", b"k"]));
        assert!(!noreply(&[b"set", b"k", b"NOREPLY"]));
        assert!(!noreply(&[]));
    }
}
