//! Reads the Prometheus text format that Envoy's `/stats/prometheus` and our services' `/metrics`
//! serve: one [`Sample`] per line, so tests can ask for a series by name and labels without
//! depending on the order a process writes labels in.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// True when every `(label, value)` of `want` is on this sample (others may be too).
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Every sample of a scrape; comments and lines that do not parse are skipped (a test that
/// needs a series asserts on it, so a line we misread fails that assertion, not silently).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(sample).collect()
}

/// The sum of the samples named `name` that carry every label of `want`; `None` when there is
/// no such sample at all (which a test tells from a zero).
pub fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = samples
        .iter()
        .filter(|s| s.name == name && s.has(want))
        .peekable();
    found.peek()?;
    Some(found.map(|s| s.value).sum())
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn labels(mut rest: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text =
            "# TYPE x counter\nx{a=\"1\",b=\"q\\\"r,s\"} 3\ny 2.5\nz_bucket{le=\"+Inf\"} 7\n";
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x");
        assert_eq!(s[0].labels["b"], "q\"r,s");
        assert!(s[0].has(&[("a", "1")]));
        assert_eq!(sum(&s, "y", &[]), Some(2.5));
        assert_eq!(sum(&s, "z_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(sum(&s, "x", &[("a", "2")]), None);
    }
}
