//! Fast, exact number parsing for the CSV fields (integers, decimals, booleans).

pub(super) fn bad(s: &[u8], what: &str, expected: &str) -> String {
    format!(
        "{what} {:?} is not {expected}",
        String::from_utf8_lossy(&s[..s.len().min(40)])
    )
}

pub(super) fn boolean(s: &[u8], what: &str) -> Result<bool, String> {
    match s {
        b"true" | b"True" | b"TRUE" => Ok(true),
        b"false" | b"False" | b"FALSE" => Ok(false),
        _ => Err(bad(s, what, "true or false")),
    }
}

/// A decimal integer with an optional leading `-`.
pub(super) fn int(s: &[u8], what: &str) -> Result<i64, String> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad(s, what, "an integer"));
    }
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad(s, what, "an integer"));
        }
        v = v * 10 + i64::from(d);
    }
    Ok(if neg { -v } else { v })
}

/// Exact powers of ten representable in an f64.
pub(super) const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

pub(super) fn float(s: &[u8], what: &str) -> Result<f64, String> {
    parse_f64(s).ok_or_else(|| bad(s, what, "a number"))
}

/// Parses a number exactly as `str::parse::<f64>` would, rejecting non-finite results.
///
/// Plain decimals (`-123.456`, what Binance writes) take [`float_prefix`]; anything else
/// (exponents, `+`, long mantissas, garbage) goes to the standard parser.
pub(crate) fn parse_f64(s: &[u8]) -> Option<f64> {
    if let Some((v, n)) = float_prefix(s)
        && n == s.len()
    {
        return Some(v);
    }
    // Slow path: the standard library's correctly rounded parser (rejects garbage, accepts
    // exponents and long mantissas).
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = text.parse().ok()?;
    v.is_finite().then_some(v)
}

/// `10^n` for `n <= 8`.
pub(super) const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The value of eight ASCII digits loaded little-endian (first digit in the lowest byte); SWAR:
/// pairs, then quads, then all eight, in three multiplies.
#[inline(always)]
pub(super) fn eight_digits_value(v: u64) -> u64 {
    let v = v.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    (v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32
}

/// Accumulates the ASCII digits at the start of `s` into `mant` (wrapping: callers bound the
/// count); returns how many there were.
///
/// Eight bytes at a time: a byte is a digit when `byte ^ 0x30 < 10`; the first non-digit ends the
/// run, and the digits before it are left-padded with `'0'` to eight and converted at once. Bytes
/// after the first non-digit may get garbled flags (carries), which does not matter.
#[inline(always)]
pub(super) fn digits(s: &[u8], mant: &mut u64) -> usize {
    let mut i = 0;
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let v = u64::from_le_bytes(*chunk);
        let t = v ^ 0x3030_3030_3030_3030;
        let non_digit = (t.wrapping_add(0x7676_7676_7676_7676) | t) & 0x8080_8080_8080_8080;
        if non_digit == 0 {
            *mant = mant
                .wrapping_mul(100_000_000)
                .wrapping_add(eight_digits_value(v));
            i += 8;
            continue;
        }
        let n = (non_digit.trailing_zeros() / 8) as usize; // 0..=7 digits
        if n > 0 {
            let shift = 8 * (8 - n as u32);
            let padded = (v << shift) | (0x3030_3030_3030_3030 >> (64 - shift));
            *mant = mant
                .wrapping_mul(POW10_U64[n])
                .wrapping_add(eight_digits_value(padded));
        }
        return i + n;
    }
    // Fewer than eight bytes left.
    while let Some(&b) = s.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        *mant = mant.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    i
}

/// The plain decimal (`-?digits[.digits]`) at the start of `s` and its length in bytes, when it
/// can be converted exactly with one IEEE division (Clinger's fast path): at most 19 digits, the
/// digits as an integer `m <= 2^53`, at most 22 of them after the point. Then `m / 10^k` is a
/// correctly rounded division of two exact values, i.e. the correctly rounded decimal, the same
/// value `str::parse::<f64>` gives for `s[..len]`. `None` for anything else (callers fall back).
#[inline(always)]
pub(super) fn float_prefix(s: &[u8]) -> Option<(f64, usize)> {
    let neg = s.first() == Some(&b'-');
    let start = usize::from(neg);
    let body = s.get(start..)?;
    let mut mant = 0u64;
    let int_digits = digits(body, &mut mant);
    let mut len = int_digits;
    let mut frac_digits = 0;
    if body.get(len) == Some(&b'.') {
        frac_digits = digits(body.get(len + 1..)?, &mut mant);
        len += 1 + frac_digits;
    }
    let total = int_digits + frac_digits;
    if total == 0 || total > 19 || mant > (1u64 << 53) || frac_digits >= POW10.len() {
        return None;
    }
    // mant <= 2^53 is exact as an f64.
    let v = mant as f64 / POW10[frac_digits];
    Some((if neg { -v } else { v }, start + len))
}

/// The integer (`-?digits`, at most 18 digits) at the start of `s` and its length, as [`int`]
/// would parse it.
#[inline(always)]
pub(super) fn int_prefix(s: &[u8]) -> Option<(i64, usize)> {
    let neg = s.first() == Some(&b'-');
    let start = usize::from(neg);
    let mut v = 0u64;
    let n = digits(s.get(start..)?, &mut v);
    if n == 0 || n > 18 {
        return None;
    }
    let v = i64::try_from(v).ok()?;
    Some((if neg { -v } else { v }, start + n))
}

/// Parses the value at the start of `rest` with `parse`, which must end right before a comma;
/// moves `rest` past the comma.
#[inline(always)]
pub(super) fn field<T>(rest: &mut &[u8], parse: impl Fn(&[u8]) -> Option<(T, usize)>) -> Option<T> {
    let (v, n) = parse(rest)?;
    let (&comma, after) = rest.get(n..)?.split_first()?;
    if comma != b',' {
        return None;
    }
    *rest = after;
    Some(v)
}
