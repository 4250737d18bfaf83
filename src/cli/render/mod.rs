//! The human text of every report: one file per command group implements
//! [`Render`](super::report::Render) for its reports. Without `--json` this is what the
//! commands print, byte for byte as before the reports existed. Shared here: [`group`]
//! (digit grouping), [`clip`] (one-line cells) and [`verdict`] (a goal met or missed).

mod bench;
mod config;
mod learn;
mod memory;
mod model;
mod replay;
mod serve;
mod tool;

/// How a goal came out, as every benchmark report writes it.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// 20452224 → "20,452,224".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The first `n` characters of `s` on one line, with `…` when cut.
pub fn clip(s: &str, n: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut out: String = one_line.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_clip_and_verdict_write_what_the_tables_show() {
        assert_eq!(group(20452224), "20,452,224");
        assert_eq!(group(999), "999");
        assert_eq!(clip("a\nb", 5), "a b");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!((verdict(true), verdict(false)), ("met", "MISSED"));
    }
}
