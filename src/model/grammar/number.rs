//! Numbers as the call grammar lets a model write them: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`
//! (no exponent; integers without the fraction), and whether a prefix can still become a
//! number within the schema's bounds ([`feasible`]) — so that a model can never write
//! itself into a number no completion saves. The sets a prefix can still reach are a few
//! intervals: "25" becomes 25, 250‥259, 2500‥2599, …; "2.5" becomes 2.5‥2.599999.

use super::schema::{Node, MAX_FRACTION_DIGITS};

/// The parts of a number prefix.
struct Parts<'a> {
    negative: bool,
    int: &'a [u8],
    /// `Some` once the point is written: the fraction's digits.
    frac: Option<&'a [u8]>,
}

/// Splits `text` by the number syntax, or `None` when it breaks it (a leading zero
/// followed by a digit, a second point, a point in an integer, …).
fn parts(text: &[u8], integer: bool) -> Option<Parts<'_>> {
    let (negative, rest) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    let (int, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(p) => (&rest[..p], Some(&rest[p + 1..])),
        None => (rest, None),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    // "-0" is no integer a model should write.
    let ok = digits(int)
        && !(int.len() > 1 && int[0] == b'0')
        && !(integer && negative && int == b"0")
        && match frac {
            None => true,
            Some(f) => !integer && !int.is_empty() && digits(f) && f.len() <= MAX_FRACTION_DIGITS,
        };
    ok.then_some(Parts {
        negative,
        int,
        frac,
    })
}

fn value(digits: &[u8]) -> i128 {
    digits.iter().fold(0i128, |v, d| {
        v.saturating_mul(10).saturating_add(i128::from(d - b'0'))
    })
}

/// The integers `[a, b]` reachable from a prefix (magnitudes), one range per extra digit
/// count; stops once the ranges pass `limit`.
fn integer_ranges(p: i128, limit: i128) -> Vec<(i128, i128)> {
    let mut out = vec![(p, p)];
    if p == 0 {
        return out;
    }
    let mut scale: i128 = 10;
    while p.saturating_mul(scale) <= limit {
        out.push((p * scale, p * scale + scale - 1));
        scale = scale.saturating_mul(10);
    }
    out
}

/// Whether `[a, b]` holds a multiple of `m` (or any integer when `m` is none).
fn holds_multiple(a: i128, b: i128, m: Option<i128>) -> bool {
    a <= b
        && match m {
            None => true,
            Some(m) => b.div_euclid(m) * m >= a,
        }
}

/// Whether the integer prefix `p` can still become a value in `[min, max]`.
fn integer_feasible(p: &Parts, min: i128, max: i128, m: Option<i128>) -> bool {
    let limit = max.abs().max(min.abs());
    let magnitudes: Vec<(i128, i128)> = if p.int.is_empty() {
        vec![(i128::from(p.negative), limit)]
    } else {
        integer_ranges(value(p.int), limit)
    };
    magnitudes.into_iter().any(|(a, b)| {
        let (a, b) = if p.negative { (-b, -a) } else { (a, b) };
        holds_multiple(a.max(min), b.min(max), m)
    })
}

/// Whether `x` is within a number node's bounds.
fn within(x: f64, min: Option<(f64, bool)>, max: Option<(f64, bool)>) -> bool {
    min.is_none_or(|(m, excl)| if excl { x > m } else { x >= m })
        && max.is_none_or(|(m, excl)| if excl { x < m } else { x <= m })
}

/// Whether the closed range `[a, b]` meets a number node's bounds.
fn meets(a: f64, b: f64, min: Option<(f64, bool)>, max: Option<(f64, bool)>) -> bool {
    min.is_none_or(|(m, excl)| if excl { b > m } else { b >= m })
        && max.is_none_or(|(m, excl)| if excl { a < m } else { a <= m })
}

/// The smallest step of a fraction.
fn ulp() -> f64 {
    10f64.powi(-(MAX_FRACTION_DIGITS as i32))
}

/// Whether the number prefix `p` can still become a value within the bounds.
fn number_feasible(p: &Parts, min: Option<(f64, bool)>, max: Option<(f64, bool)>) -> bool {
    // Ranges grow tenfold per digit: stop past the larger bound (or far out, unbounded).
    let limit = match (min, max) {
        (Some((a, _)), Some((b, _))) => a.abs().max(b.abs()),
        _ => 1e18,
    };
    let ranges: Vec<(f64, f64)> = match (p.int.is_empty(), p.frac) {
        (true, _) if p.negative => vec![(ulp(), limit)],
        (true, _) => vec![(0.0, limit)],
        (false, None) => {
            let i = value(p.int) as f64;
            let mut out = vec![(i, i + 1.0 - ulp())];
            let mut scale = 10.0;
            while i > 0.0 && i * scale <= limit {
                out.push((i * scale, (i + 1.0) * scale - ulp()));
                scale *= 10.0;
            }
            out
        }
        (false, Some(f)) => {
            let text = format!(
                "{}.{}",
                std::str::from_utf8(p.int).unwrap_or("0"),
                std::str::from_utf8(f).unwrap_or("")
            );
            let v: f64 = text.trim_end_matches('.').parse().unwrap_or(0.0);
            let span = if f.is_empty() {
                1.0
            } else {
                10f64.powi(-(f.len() as i32))
            };
            vec![(v, v + span - ulp())]
        }
    };
    ranges.into_iter().any(|(a, b)| {
        let (a, b) = if p.negative { (-b, -a) } else { (a, b) };
        meets(a, b, min, max)
    })
}

/// Whether `text` can still grow into a number that `node` (an `Integer` or `Number`)
/// accepts.
pub fn feasible(text: &[u8], node: &Node) -> bool {
    match node {
        Node::Integer {
            min,
            max,
            multiple_of,
        } => parts(text, true).is_some_and(|p| integer_feasible(&p, *min, *max, *multiple_of)),
        Node::Number { min, max } => {
            parts(text, false).is_some_and(|p| number_feasible(&p, *min, *max))
        }
        _ => false,
    }
}

/// Whether `text` is a whole number that `node` accepts.
pub fn complete(text: &[u8], node: &Node) -> bool {
    let integer = matches!(node, Node::Integer { .. });
    let Some(p) = parts(text, integer) else {
        return false;
    };
    if p.int.is_empty() || p.frac.is_some_and(<[u8]>::is_empty) {
        return false;
    }
    match node {
        Node::Integer {
            min,
            max,
            multiple_of,
        } => {
            let v = if p.negative {
                -value(p.int)
            } else {
                value(p.int)
            };
            v >= *min && v <= *max && multiple_of.is_none_or(|m| v % m == 0)
        }
        Node::Number { min, max } => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|x| within(x, *min, *max)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(min: i128, max: i128, m: Option<i128>) -> Node {
        Node::Integer {
            min,
            max,
            multiple_of: m,
        }
    }

    #[test]
    fn an_integer_prefix_lives_while_some_completion_is_in_bounds() {
        let width = int(64, 1024, Some(8));
        // "2" → 256; "25" → 256; "1" → 1000..1024 holds 1000, 1008, 1016, 1024.
        for ok in ["", "1", "2", "25", "256", "102", "1024", "64", "9"] {
            assert!(feasible(ok.as_bytes(), &width), "{ok}");
        }
        // "103" → 1030.. is over; "-" is below; "0" is only 0; "257" is no multiple and
        // 2570.. is over; a point makes no integer.
        for bad in ["103", "-", "0", "01", "257", "2.", "11111"] {
            assert!(!feasible(bad.as_bytes(), &width), "{bad}");
        }
        assert!(complete(b"256", &width) && !complete(b"25", &width));
        assert!(!complete(b"1025", &width) && !complete(b"", &width));
        let any = int(i64::MIN as i128, i64::MAX as i128, None);
        assert!(!feasible(b"-0", &any) && complete(b"-12", &any));
        assert!(!feasible(b"99999999999999999999", &any));
    }

    #[test]
    fn a_number_prefix_lives_while_some_completion_is_in_bounds() {
        let scale = Node::Number {
            min: Some((0.0, false)),
            max: Some((30.0, false)),
        };
        for ok in [
            "",
            "3",
            "30",
            "30.",
            "30.0",
            "7.5",
            "0",
            "0.25",
            "29.999999",
        ] {
            assert!(feasible(ok.as_bytes(), &scale), "{ok}");
        }
        for bad in ["31", "30.5", "-", "-1", "300", "1.2345678", "1..", "00"] {
            assert!(!feasible(bad.as_bytes(), &scale), "{bad}");
        }
        assert!(complete(b"7.5", &scale) && complete(b"30", &scale));
        assert!(!complete(b"7.", &scale) && !complete(b"30.01", &scale));
        let positive = Node::Number {
            min: Some((0.0, true)),
            max: None,
        };
        assert!(feasible(b"0.", &positive) && !complete(b"0", &positive));
        assert!(complete(b"0.001", &positive));
    }
}
