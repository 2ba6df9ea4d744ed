//! Result formatting: plain-text tables for people, one JSON object for scripts, and the small
//! statistics (median, percentiles) both are built from.

use std::time::Duration;

use serde_json::{Map, Value};

/// The median of `samples` (the mean of the middle two for an even count); zero when empty.
pub fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// p50, p99 and max of per-client latencies (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(samples: &[Duration]) -> Spread {
        let mut v = samples.to_vec();
        v.sort();
        let rank = |p: f64| {
            if v.is_empty() {
                return Duration::ZERO;
            }
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i]
        };
        Spread {
            n: v.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "clients": self.n,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

/// Milliseconds with microsecond resolution, for JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A duration for a table cell, in a unit that keeps 3-4 significant digits.
pub fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 10_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "-".into()
    }
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A plain-text table with a title, a header row and left-aligned first column.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A line printed under the table (method, caveats).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |r: &[String]| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                let pad = width[i] - c.chars().count();
                if i == 0 {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str("  ");
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                }
            }
            s.trim_end().to_string()
        };
        println!("\n== {} ==", self.title);
        println!("{}", line(&self.header));
        println!(
            "{}",
            "-".repeat(width.iter().sum::<usize>() + 2 * (cols - 1))
        );
        for r in &self.rows {
            println!("{}", line(r));
        }
        for n in &self.notes {
            println!("  * {n}");
        }
    }
}

/// Collects every section's figures for the final JSON line.
#[derive(Default)]
pub struct Report {
    sections: Map<String, Value>,
}

impl Report {
    pub fn add(&mut self, section: &str, value: Value) {
        self.sections.insert(section.to_string(), value);
    }

    pub fn json_line(&self) -> String {
        Value::Object(self.sections.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(median(&[d(3), d(1), d(2)]), d(2));
        assert_eq!(
            median(&[d(4), d(1), d(2), d(3)]),
            Duration::from_micros(2500)
        );
        let v: Vec<Duration> = (1..=100).map(d).collect();
        let s = Spread::of(&v);
        assert_eq!((s.p50, s.p99, s.max), (d(50), d(99), d(100)));
        assert_eq!(Spread::of(&[d(7)]).p99, d(7));
    }
}
