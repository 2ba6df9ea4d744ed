//! The project's Markdown documents are its user documentation: a clone of the repository must
//! be enough. So every link in every `*.md` file resolves inside the repository (a file or
//! directory that exists, and a heading that exists when the link names one), and none points
//! outside it.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

/// Directories that hold no documentation of ours (build output, installed tools, run logs).
const SKIP: &[&str] = &["target", ".git", ".venv", ".run", "node_modules"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                markdown_files(&path, out);
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The anchors GitHub gives a document's headings: lower case, letters, digits, `-` and `_`
/// kept, spaces turned into `-`, everything else dropped; repeats get `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let h = heading.take().unwrap_or_default();
                let slug: String = h
                    .to_lowercase()
                    .chars()
                    .filter_map(|c| match c {
                        ' ' => Some('-'),
                        c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                        _ => None,
                    })
                    .collect();
                let mut candidate = slug.clone();
                let mut n = 0;
                while out.contains(&candidate) {
                    n += 1;
                    candidate = format!("{slug}-{n}");
                }
                out.insert(candidate);
            }
            _ => {}
        }
    }
    out
}

/// Every link and image target in a document, in order.
fn links(text: &str) -> Vec<String> {
    Parser::new(text)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

/// `path` with `.` and `..` resolved lexically (the target may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with one link of `file`, if anything.
fn check(root: &Path, file: &Path, link: &str) -> Option<String> {
    if link.contains("://") || link.starts_with("mailto:") {
        return Some("points outside the repository".into());
    }
    let (path, anchor) = match link.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (link, None),
    };
    if path.starts_with('/') {
        return Some("is an absolute path; write it relative to the document".into());
    }
    let target = if path.is_empty() {
        file.to_path_buf()
    } else {
        normalize(&file.parent().unwrap().join(path))
    };
    if !target.starts_with(root) {
        return Some("leaves the repository".into());
    }
    if !target.exists() {
        return Some(format!(
            "names {}, which does not exist",
            target.strip_prefix(root).unwrap().display()
        ));
    }
    if let Some(anchor) = anchor.filter(|a| !a.is_empty()) {
        if target.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&target).unwrap();
            if !anchors(&text).contains(anchor) {
                return Some(format!(
                    "names the heading #{anchor}, which {} does not have",
                    target.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    None
}

#[test]
fn every_link_in_the_docs_resolves_inside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    let readme = root.join("README.md");
    assert!(files.contains(&readme), "README.md is found");
    assert!(files.contains(&root.join("docs/production.md")));
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            checked += 1;
            if let Some(problem) = check(&root, file, &link) {
                let name = file.strip_prefix(&root).unwrap().display();
                problems.push(format!("{name}: the link `{link}` {problem}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The docs do link to each other (so this test reads links at all).
    assert!(checked > 50, "only {checked} links found");
}

#[test]
fn the_link_check_catches_each_kind_of_broken_link() {
    let root = root();
    let readme = root.join("README.md");
    for (link, expected) in [
        ("https://example.com/", "outside the repository"),
        ("../shared/spec/gateway.md", "leaves the repository"),
        ("/etc/passwd", "absolute path"),
        ("docs/no-such-page.md", "does not exist"),
        ("docs/configuration.md#no-such-heading", "does not have"),
        ("#no-such-heading", "does not have"),
    ] {
        let problem = check(&root, &readme, link).unwrap_or_else(|| panic!("{link} passed"));
        assert!(problem.contains(expected), "{link}: {problem}");
    }
    for good in [
        "docs/configuration.md#gatewaysnamelisteners",
        "docs/production.md",
        "#quick-start",
        "examples/gateway.yaml",
    ] {
        assert_eq!(check(&root, &readme, good), None, "{good}");
    }
}

#[test]
fn heading_anchors_follow_the_github_rules() {
    let got = anchors("# A `b.<c>` d\n## Quick start\n## Quick start\n### x_y-z!\n");
    let want: BTreeSet<String> = ["a-bc-d", "quick-start", "quick-start-1", "x_y-z"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}

/// The README's metric table names exactly the metrics our processes declare: every name
/// string in the four metrics modules (one `Opts::new` or helper call per metric there).
#[test]
fn the_readme_lists_every_metric_the_services_declare() {
    let root = root();
    let mut declared = BTreeSet::new();
    for file in [
        "ads/src/metrics.rs",
        "authz-service/src/metrics.rs",
        "ratelimit/src/metrics.rs",
        "xds-server/src/metrics.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        for quoted in text.split('"').skip(1).step_by(2) {
            let ours = ["xds_", "authz_", "ratelimit_"]
                .iter()
                .any(|p| quoted.starts_with(p));
            if ours && quoted.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                declared.insert(quoted.to_string());
            }
        }
    }
    assert!(declared.len() >= 15, "the scan found too few: {declared:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let listed: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|n| {
            ["xds_", "authz_", "ratelimit_"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    assert_eq!(listed, declared, "README metrics table vs the code");
}

/// The Grafana dashboard parses, and every metric its queries name is one the README documents
/// (our metric table, checked against the code above, and Envoy's per-route metrics, checked
/// against a real Envoy's scrape in `route_metrics.rs`).
#[test]
fn every_metric_the_dashboard_queries_is_documented() {
    let root = root();
    let text = std::fs::read_to_string(root.join("deploy/grafana/dashboards/gateway.json"))
        .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut names = BTreeSet::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if ["envoy_", "authz_", "ratelimit_", "xds_"]
                    .iter()
                    .any(|p| word.starts_with(p))
                    && !word.starts_with("envoy_route")
                    && !word.starts_with("envoy_response_code")
                {
                    let base = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    names.insert(base.to_string());
                }
            }
        }
    }
    assert!(names.len() >= 8, "{names:?}");
    for n in &names {
        assert!(
            readme.contains(&format!("`{n}`")),
            "the dashboard queries {n}, which the README does not document"
        );
    }
}
