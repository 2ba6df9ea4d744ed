//! "Did you mean …?": for a key, name or word that is not valid where it is written, the closest
//! of those that are, when it is close enough to be a slip of the keyboard.

/// The candidate `word` most likely misspells, if any. Letter case and `-` versus `_` are
/// ignored; beyond that, one edit (a character inserted, deleted or replaced, or two neighbours
/// swapped) per three characters of `word` is allowed, and at least one, as Cargo allows for its
/// own suggestions: `servce` is `service`, `colour` is nothing a route has. Ties go to the
/// candidate listed first, so a suggestion never depends on hashing. A word that is itself a
/// candidate gets none.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // No key or name is this long; the bound keeps the quadratic distance cheap on any file.
    const MAX_LEN: usize = 64;
    if word.len() > MAX_LEN {
        return None;
    }
    let normal = |s: &str| s.to_lowercase().replace('-', "_");
    let typed = normal(word);
    let length = typed.chars().count();
    let allowed = length.max(3) / 3;
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            return None;
        }
        let normalized = normal(candidate);
        // The distance is at least the difference in length: most candidates need no more.
        if candidate.len() > MAX_LEN || normalized.chars().count().abs_diff(length) > allowed {
            continue;
        }
        let distance = strsim::osa_distance(&typed, &normalized);
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// ` (did you mean `x`?)` after the word it is about, or nothing.
pub(crate) fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE_KEYS: [&str; 6] = ["name", "match", "service", "services", "respond", "auth"];

    #[test]
    fn suggests_close_names_only() {
        let cases = [
            ("servce", Some("service")),
            ("servces", Some("services")),
            ("auht", Some("auth")),
            ("Service", Some("service")),
            ("nmae", Some("name")),
            ("respnd", Some("respond")),
            ("colour", None),
            ("backend", None),
            ("x", None),
            ("", None),
            ("service", None),
        ];
        for (word, want) in cases {
            assert_eq!(closest(word, ROUTE_KEYS), want, "{word}");
        }
        assert_eq!(
            closest("rate-limits", ["rate_limit", "rate_limits"]),
            Some("rate_limits")
        );
        assert_eq!(
            closest("connect_failure", ["reset", "connect-failure"]),
            Some("connect-failure")
        );
        // Two at the same distance: the first listed wins.
        assert_eq!(closest("ab", ["aa", "bb"]), Some("aa"));
        // A hostile file's megabyte-long key costs nothing and gets no suggestion.
        let long = "service".repeat(150_000);
        assert_eq!(closest(&long, ROUTE_KEYS), None);
        assert_eq!(closest("service_", [long.as_str()]), None);
    }

    #[test]
    fn the_hint_reads_after_the_word() {
        assert_eq!(did_you_mean(Some("service")), " (did you mean `service`?)");
        assert_eq!(did_you_mean(None), "");
    }
}
