//! How the CLI shows things: aligned tables and key/value blocks for people, the API's JSON for scripts,
//! human sizes and rates, and the parser for rates given on the command line.
//!
//! Sizes are always 1024-based (KiB, MiB, …) both when printed and when parsed, so that what the CLI
//! prints can be pasted back into it.

use std::fmt::Write as _;

use serde_json::Value;

/// `--output`: what the commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and human sizes.
    Table,
    /// The API's JSON response, pretty-printed.
    Json,
}

/// A table with a header row; columns are left-aligned and separated by two spaces.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Missing cells are empty; extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Number of rows (the header not counted).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending with a newline. Trailing spaces are trimmed.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label: value` lines with the values aligned. Pairs with an empty value are left out.
pub fn key_values(pairs: &[(&str, String)], indent: usize) -> String {
    let pairs: Vec<&(&str, String)> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w - k.chars().count();
        let _ = writeln!(
            out,
            "{:indent$}{k}:{:pad$} {v}",
            "",
            "",
            indent = indent,
            pad = pad
        );
    }
    out
}

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte count for people: `512 B`, `1.5 KiB`, `40.0 GiB` (1024-based, one decimal above bytes).
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // Rounding can reach 1024.0 (e.g. 1 MiB - 1 B prints as "1024.0 KiB" otherwise).
    if format!("{value:.1}") == "1024.0" && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate for people: `human_bytes(n) + "/s"`.
pub fn human_rate(bytes_per_sec: u64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec))
}

/// A duration in seconds for people: `45s`, `3m 20s`, `2h 05m`, `3d 04h`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Why a rate given on the command line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error(
        "{0:?} is not a rate: use bytes per second with an optional K, M, G or T suffix (1024-based), e.g. 10M or 512K"
    )]
    Syntax(String),
    #[error("{0:?} is too large: the limit is 16 EiB/s")]
    TooLarge(String),
}

/// Parses a rate in bytes per second: `1048576`, `512K`, `10M`, `1.5G`, `2T`. Suffixes are
/// 1024-based and case-insensitive, may be spelled `KiB`/`KB`, and may be followed by `/s`. `0` means
/// unlimited.
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let syntax = || RateError::Syntax(text.to_owned());
    let s = text.trim();
    let s = s.strip_suffix("/s").unwrap_or(s).trim_end();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(syntax()),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(syntax());
    }
    match number.split_once('.') {
        None => {
            let n: u64 = number.parse().map_err(|_| {
                if number.len() > 19 {
                    RateError::TooLarge(text.to_owned())
                } else {
                    syntax()
                }
            })?;
            n.checked_mul(multiplier)
                .ok_or_else(|| RateError::TooLarge(text.to_owned()))
        }
        Some((whole, frac)) => {
            if frac.contains('.') || frac.len() > 6 {
                return Err(syntax());
            }
            // Exact fixed-point arithmetic: 1.5M is exactly 1572864, not a float's approximation.
            let scale = 10u128.pow(frac.len() as u32);
            let whole: u128 = whole.parse().map_err(|_| syntax())?;
            let frac: u128 = frac.parse().map_err(|_| syntax())?;
            let total = (whole * scale + frac) * u128::from(multiplier) / scale;
            u64::try_from(total).map_err(|_| RateError::TooLarge(text.to_owned()))
        }
    }
}

/// Pretty JSON with a trailing newline.
pub fn pretty_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_1024_based_suffixes() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("512K"), Ok(512 * 1024));
        assert_eq!(parse_rate("512k"), Ok(524_288));
        assert_eq!(parse_rate("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_rate("10MiB/s"), Ok(10_485_760));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
        assert_eq!(parse_rate("0.5K"), Ok(512));
        assert_eq!(parse_rate("2T"), Ok(2 << 40));
        assert_eq!(parse_rate(" 3 M "), Ok(3 << 20));
    }

    #[test]
    fn bad_rates_are_rejected_with_the_reason() {
        for bad in [
            "", "M", "10X", "1.2.3M", ".5M", "5.M", "-1", "10 M B", "1e6",
        ] {
            assert!(
                matches!(parse_rate(bad), Err(RateError::Syntax(_))),
                "{bad:?} should be a syntax error"
            );
        }
        assert!(matches!(
            parse_rate("20000000T"),
            Err(RateError::TooLarge(_))
        ));
        assert!(matches!(
            parse_rate("99999999999999999999999"),
            Err(RateError::TooLarge(_))
        ));
        let msg = parse_rate("fast").expect_err("not a rate").to_string();
        assert!(msg.contains("\"fast\"") && msg.contains("10M"), "{msg}");
    }

    #[test]
    fn human_sizes_are_1024_based() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(40 << 30), "40.0 GiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_rate(10 << 20), "10.0 MiB/s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(200), "3m 20s");
        assert_eq!(human_duration(7500), "2h 05m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600), "3d 04h");
    }

    #[test]
    fn what_is_printed_parses_back() {
        for n in [1u64 << 10, 10 << 20, 3 << 29, 2 << 40] {
            let printed = human_bytes(n).replace(' ', "");
            assert_eq!(parse_rate(&printed), Ok(n), "{printed}");
        }
    }

    #[test]
    fn tables_align_columns_and_trim_lines() {
        let mut t = Table::new(&["ID", "NAME", "STATUS"]);
        t.row(vec!["j-1".into(), "a-long-name".into(), "Running".into()]);
        t.row(vec!["j-22".into(), "b".into(), String::new()]);
        t.row(vec!["j-3".into()]);
        assert_eq!(t.len(), 3);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ID    NAME         STATUS",
                "j-1   a-long-name  Running",
                "j-22  b",
                "j-3",
            ]
        );
        // Every cell of a column starts at the same character position.
        let col = lines[0].find("STATUS").expect("header present");
        assert_eq!(lines[1].find("Running"), Some(col));
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into(), "x".into()]);
        t.row(vec!["ab".into(), "y".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "é   x");
        assert_eq!(lines[2], "ab  y");
    }

    #[test]
    fn key_values_align_and_skip_empty_values() {
        let text = key_values(
            &[
                ("OS", "Debian 12".into()),
                ("Kernel", "6.1.0".into()),
                ("Gateway", String::new()),
            ],
            2,
        );
        assert_eq!(text, "  OS:     Debian 12\n  Kernel: 6.1.0\n");
    }
}
