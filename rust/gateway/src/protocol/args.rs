//! Splitting a command line into tokens and checking them.

use std::str::FromStr;

use super::Limits;

/// Splits on spaces only, runs of them included, as memcached's tokenizer does: a tab
/// is part of a token.
pub(super) fn tokenize(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect()
}

/// A key of at most `max_key_len` bytes without control characters (spaces can't be in
/// a token).
pub(super) fn valid_key(key: &[u8], limits: &Limits) -> bool {
    key.len() <= limits.max_key_len && !key.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// A decimal number that fills the whole token and fits `T` (an optional sign, like
/// strtol). memcached reads exptimes and lengths as 32-bit signed, so callers ask for
/// `i32` there.
pub(super) fn number<T: FromStr>(token: &[u8]) -> Option<T> {
    std::str::from_utf8(token).ok()?.parse().ok()
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
            tokenize(b"  get  a\tb c "),
            vec![&b"get"[..], &b"a\tb"[..], &b"c"[..]]
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
    fn numbers() {
        assert_eq!(number::<u32>(b"4294967295"), Some(u32::MAX));
        assert_eq!(number::<u32>(b"4294967296"), None);
        assert_eq!(number::<u32>(b"-1"), None);
        assert_eq!(number::<i32>(b"-1"), Some(-1));
        assert_eq!(number::<i32>(b"2147483648"), None);
        assert_eq!(number::<u64>(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(number::<u64>(b"18446744073709551616"), None);
        assert_eq!(number::<u64>(b"12ab"), None);
        assert_eq!(number::<u64>(b"0x10"), None);
        assert_eq!(number::<u64>(b"1.5"), None);
        assert_eq!(number::<u64>(b"\t1"), None);
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
