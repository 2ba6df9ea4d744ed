//! Media types: which bodies are JSON, and whether a request's `Accept` prefers XML.

/// `application/json` or `application/<anything>+json`, in any letter case, with any
/// parameters (`application/JSON; charset=utf-8`, `application/problem+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(sub) = essence.strip_prefix("application/") else {
        return false;
    };
    sub == "json" || (sub.ends_with("+json") && sub.len() > "+json".len())
}

/// True when `accept` (every `Accept` header of the request, joined by `,`) gives
/// `application/xml` a higher q-value than `application/json` (RFC 9110 §12.5.1: each type
/// takes the q of the most specific range that matches it, `type/subtype` over `type/*` over
/// `*/*`; a type no range matches has q 0). Equal q-values, `*/*` alone and no `Accept` at
/// all keep JSON.
pub fn prefers_xml(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    quality(accept, "xml") > quality(accept, "json")
}

/// The q-value (in thousandths) `accept` gives `application/<sub>`.
fn quality(accept: &str, sub: &str) -> u32 {
    // (specificity, q) of the best-matching range so far.
    let mut best: Option<(u8, u32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let specificity = match media.split_once('/') {
            Some(("application", s)) if s == sub => 2,
            Some(("application", "*")) => 1,
            Some(("*", "*")) => 0,
            _ => continue,
        };
        let mut q = 1000;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    // A q we cannot read makes the range worthless rather than preferred.
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
        }
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        } else if let Some((s, bq)) = best {
            // The same range twice: the higher q counts.
            if s == specificity && q > bq {
                best = Some((s, q));
            }
        }
    }
    best.map_or(0, |(_, q)| q)
}

/// RFC 9110 `qvalue`: `0`, `1`, `0.ddd`, `1.000`, in thousandths.
fn parse_q(v: &str) -> Option<u32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0;
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u32::from(d - b'0') * [100, 10, 1][i];
    }
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for yes in [
            "application/json",
            "application/JSON; charset=utf-8",
            " Application/Json ",
            "application/problem+json",
            "application/vnd.api+JSON;v=2",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "",
            "text/plain",
            "application/xml",
            "text/json",
            "application/jsonp",
            "application/+json",
            "application/json-seq",
            "multipart/form-data",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn accept_negotiation() {
        let cases = [
            (None, false),
            (Some(""), false),
            (Some("*/*"), false),
            (Some("application/xml"), true),
            (Some("application/xml;q=0.9, application/json;q=0.8"), true),
            (Some("application/json;q=0.9, application/xml;q=0.8"), false),
            (Some("application/xml, application/json"), false),
            (Some("application/json, application/xml"), false),
            (Some("application/xml, */*;q=0.1"), true),
            (Some("*/*;q=0.5, application/xml"), true),
            (Some("application/*, application/json;q=0.5"), true),
            (Some("application/xml;q=0, */*"), false),
            (Some("APPLICATION/XML"), true),
            (Some("text/xml"), false),
            (Some("application/xml;q=2"), false),
            (Some("application/xml;q=0.9999"), false),
            (Some("application/xml;q=abc, application/json;q=0.1"), false),
            (Some("application/xml;q=1.0"), true),
            (Some("application/json;q=0, application/xml;q=0.001"), true),
        ];
        for (accept, want) in cases {
            assert_eq!(prefers_xml(accept), want, "{accept:?}");
        }
    }
}
