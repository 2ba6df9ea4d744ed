//! The command lines of every binary in the workspace, as a user meets them: every flag of every
//! (sub)command has help text and an environment variable (spec §7), both policy services serve
//! with and without the `serve` subcommand, and logs written to a file carry no ANSI colour codes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::authz::{SECRET, SECRET_ENV};
use tests::{free_port, repo_root, workspace_bin, Proc, XdsServer};

/// Every binary of the workspace: `<crate>/src/main.rs` is the binary named after its crate (the
/// folder, see STYLE.md), `<crate>/src/bin/<name>.rs` the binary `<name>`. Found on disk, so a
/// new binary is checked without anyone adding it here.
fn workspace_binaries() -> Vec<String> {
    let mut bins = Vec::new();
    for entry in std::fs::read_dir(repo_root()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("Cargo.toml").is_file() || dir == repo_root() {
            continue;
        }
        if dir.join("src/main.rs").is_file() {
            bins.push(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
        if let Ok(files) = std::fs::read_dir(dir.join("src/bin")) {
            for f in files {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "rs") {
                    bins.push(f.file_stem().unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    bins.sort();
    bins
}

/// What `--help` of one (sub)command says about its arguments and subcommands.
#[derive(Debug, Default, PartialEq)]
struct Help {
    /// Each argument as clap writes it (`-l, --listen <LISTEN>`, `[CONFIG]`) and the lines of
    /// text that describe it.
    args: Vec<(String, Vec<String>)>,
    subcommands: Vec<String>,
}

/// Reads clap's `--help`. An argument's text follows its name on the same line (two or more
/// spaces apart), or, when it has several paragraphs, starts on the next line, indented deeper;
/// either way it ends with clap's notes `[env: …]`, `[default: …]` and the like.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if indent == 0 {
            section = if trimmed.ends_with(':') { trimmed } else { "" };
            continue;
        }
        match section {
            "" => {}
            "Commands:" => {
                if indent <= 2 {
                    let name = trimmed.split_whitespace().next().unwrap().to_string();
                    if name != "help" {
                        help.subcommands.push(name);
                    }
                }
            }
            // `Options:`, `Arguments:` and any custom heading.
            _ if indent <= 6 => {
                let (spec, rest) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
                let lines = Some(rest.trim()).filter(|r| !r.is_empty());
                help.args.push((
                    spec.to_string(),
                    lines.into_iter().map(String::from).collect(),
                ));
            }
            _ => {
                if let Some((_, lines)) = help.args.last_mut() {
                    lines.push(trimmed.to_string());
                }
            }
        }
    }
    help
}

/// The problems of one argument: no help text (its text starts with one of clap's notes, or
/// there is none), no environment variable.
fn problems(spec: &str, lines: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    if lines.first().is_none_or(|t| t.starts_with('[')) {
        out.push("no help text");
    }
    // clap's own `--help` and `--version` have nothing to configure.
    let own = ["-h, --help", "-V, --version"].contains(&spec);
    if !own && !lines.iter().any(|l| l.contains("[env: ")) {
        out.push("no environment variable");
    }
    out
}

fn run_help(bin: &Path, path: &[String]) -> String {
    let out = Command::new(bin).args(path).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{} {} --help: {}\n{}",
        bin.display(),
        path.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The parser on clap's own rendering (the clap the binaries link), in both layouts, so a clap
/// update that changes the layout fails here rather than silently finding nothing to check.
#[test]
fn the_help_parser_reads_clap_as_the_binaries_print_it() {
    let mut cmd = clap::Command::new("x")
        .arg(
            clap::Arg::new("good")
                .long("good")
                .env("GOOD")
                .help("Does good."),
        )
        .arg(clap::Arg::new("bare").long("bare").env("BARE"))
        .arg(
            clap::Arg::new("noenv")
                .long("noenv")
                .help("Has no variable."),
        )
        .arg(
            clap::Arg::new("long")
                .long("long")
                .env("LONG")
                .help("Short.")
                .long_help("Short.\n\nAnd a second paragraph."),
        )
        .arg(
            clap::Arg::new("longbare")
                .long("longbare")
                .env("LONGBARE")
                .long_help(""),
        )
        .arg(clap::Arg::new("file").env("FILE").help("A positional."))
        .subcommand(clap::Command::new("serve").about("Serves."));
    let text = cmd.render_long_help().to_string();
    let help = parse_help(&text);
    assert_eq!(help.subcommands, ["serve"], "{text}");
    let found: Vec<(&str, Vec<&str>)> = help
        .args
        .iter()
        .map(|(a, t)| (a.as_str(), problems(a, t)))
        .collect();
    let want: Vec<(&str, Vec<&str>)> = vec![
        ("[file]", vec![]),
        ("--good <good>", vec![]),
        ("--bare <bare>", vec!["no help text"]),
        ("--noenv <noenv>", vec!["no environment variable"]),
        ("--long <long>", vec![]),
        ("--longbare <longbare>", vec!["no help text"]),
        ("-h, --help", vec![]),
    ];
    assert_eq!(found, want, "{text}");
}

#[test]
fn every_flag_of_every_binary_has_help_text_and_an_environment_variable() {
    let binaries = workspace_binaries();
    for expected in [
        "xds-server",
        "authz-service",
        "ratelimit-service",
        "echo-upstream",
    ] {
        assert!(binaries.iter().any(|b| b == expected), "{binaries:?}");
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for name in &binaries {
        let bin = workspace_bin(name);
        let mut todo: Vec<Vec<String>> = vec![vec![]];
        while let Some(path) = todo.pop() {
            let text = run_help(&bin, &path);
            let help = parse_help(&text);
            assert!(
                !help.args.is_empty(),
                "{name} {}: no arguments read from\n{text}",
                path.join(" ")
            );
            for (arg, lines) in &help.args {
                checked += 1;
                for p in problems(arg, lines) {
                    missing.push(format!("{name} {} {arg}: {p}", path.join(" ")));
                }
            }
            for sub in help.subcommands {
                let mut p = path.clone();
                p.push(sub);
                todo.push(p);
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(checked > 50, "only {checked} arguments found");
}

/// A gateway.yaml that gives both policy services a policy, so each becomes ready.
fn policy_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let (authz, rls, http) = (free_port(), free_port(), free_port());
    std::fs::write(
        &path,
        format!(
            r#"version: 1
services:
  api: {{ endpoints: [127.0.0.1:{http}] }}
auth:
  service: {{ address: 127.0.0.1:{authz} }}
  jwt:
    main:
      issuer: https://issuer.cli.test
      algorithms: [HS256]
      secret_env: {SECRET_ENV}
rate_limits:
  service: {{ address: 127.0.0.1:{rls} }}
  plans: {{ free: 10/minute }}
  default_plan: free
gateways:
  edge:
    listeners: [{{ name: http, port: {http} }}]
    routes:
      - {{ name: r, match: {{ prefix: / }}, service: api, auth: main }}
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_policy_services_serve_with_and_without_the_subcommand_and_log_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let config = policy_config(dir.path());
    let mut xds = XdsServer::start(&config, dir.path()).await;
    let mut procs = Vec::new();
    for service in ["authz-service", "ratelimit-service"] {
        // `ratelimit-service --xds …` is spec §7's form; `… serve --xds …` the subcommand's.
        for serve in [false, true] {
            let name = format!("{service}{}", if serve { "-serve" } else { "" });
            let admin = free_port();
            let mut cmd = Command::new(workspace_bin(service));
            if serve {
                cmd.arg("serve");
            }
            cmd.args(["--xds", &xds.grpc_addr(), "--node-id", &name])
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .args(["--admin", &format!("127.0.0.1:{admin}")])
                .env(SECRET_ENV, SECRET)
                .env("RUST_LOG", "info");
            let mut proc = Proc::spawn(&name, cmd, dir.path());
            let url = format!("http://127.0.0.1:{admin}/readyz");
            proc.wait_http_ok(
                &format!("{name} to have its policy"),
                &url,
                Duration::from_secs(30),
            )
            .await;
            procs.push(proc);
        }
    }
    // Every process wrote to a file, not a terminal: plain text, and something was written.
    for p in procs.iter_mut().chain([xds.proc()]) {
        let log = p.log();
        assert!(
            log.contains(" INFO "),
            "{}: nothing logged:\n{log}",
            p.name()
        );
        assert!(
            !log.contains('\u{1b}'),
            "{}: ANSI codes in\n{log}",
            p.name()
        );
    }
}
