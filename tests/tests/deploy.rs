//! The container files agree with the code and with each other, checked without a Docker engine
//! (tests/tests/docker_stack.rs runs the stack for real: `make test-docker`); each fact `docker
//! compose up` relies on is checked statically: the committed Envoy bootstraps are exactly what `xds-server bootstrap` prints and
//! Envoy accepts them; every image is built by our Dockerfile (and contains the binaries the
//! service runs) or is a pinned public image; every address in the compose gateway config names
//! a compose service and the port that service listens on; every mounted file exists and the
//! mounts cover every file the config reads; dependencies exist and are backed by healthchecks;
//! the control plane's ports require the certificates `xds-server certs` issues, and each party
//! holds its own; and the compose config differs from `examples/gateway.yaml` only where
//! containers need it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use config::{Config, HostPort, JwtKeys, RouteAuth};
use yaml_rust2::{Yaml, YamlLoader};

use tests::xds::{validate, xds_server_bin};
use tests::{envoy_bin, repo_root, workspace_bin};

const COMPOSE: &str = "docker-compose.yml";
/// The gateway config the compose stack serves.
const DOCKER_CONFIG: &str = "examples/gateway.docker.yaml";
/// The config `make up` serves; the compose one must mirror it.
const LOCAL_CONFIG: &str = "examples/gateway.yaml";

/// Every committed bootstrap: (file, gateway, node id). One per Envoy replica, each with its own
/// node id so that xds-server's `/status` tells the replicas apart. Where Envoy finds xds-server
/// is not listed: it is derived from the compose file, so moving xds-server there makes these
/// files stale.
const BOOTSTRAPS: [(&str, &str, &str); 2] = [
    ("envoy/edge-1.json", "edge", "edge-1"),
    ("envoy/edge-2.json", "edge", "edge-2"),
];
/// Envoy's admin listener inside its container (published by compose).
const ENVOY_ADMIN: (&str, u16) = ("0.0.0.0", 9901);
/// The port `redis-server` listens on when, as in the official image, no `--port` is given.
const REDIS_DEFAULT_PORT: u16 = 6379;

#[test]
fn committed_bootstraps_match_the_generator_and_envoy_accepts_them() {
    let compose = compose();
    let xds = compose.xds_address();
    let tls = compose.tls_dir();
    // Envoy validates the certificate files a bootstrap names, so it checks each one with the
    // container's certificate directory replaced by freshly issued certificates.
    let issued = tempfile::tempdir().expect("temp dir");
    issue_certs(issued.path(), &["edge"]);
    for (file, gateway, node_id) in BOOTSTRAPS {
        let (ca, cert, key) = (
            format!("{tls}/ca.pem"),
            format!("{tls}/{gateway}.pem"),
            format!("{tls}/{gateway}.key"),
        );
        let args = [
            "bootstrap",
            "--gateway",
            gateway,
            "--node-id",
            node_id,
            "--xds",
            &xds,
            "--admin-address",
            ENVOY_ADMIN.0,
            "--admin-port",
            &ENVOY_ADMIN.1.to_string(),
            "--xds-ca",
            &ca,
            "--xds-tls-cert",
            &cert,
            "--xds-tls-key",
            &key,
        ];
        let out = Command::new(xds_server_bin())
            .args(args)
            .output()
            .expect("run xds-server bootstrap");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            read(file).trim(),
            "{file} is stale: regenerate it with `xds-server {} > {file}`",
            args.join(" ")
        );
        let local = issued.path().join(format!("{node_id}.json"));
        std::fs::write(
            &local,
            read(file).replace(
                &format!("\"{tls}/"),
                &format!("\"{}/", issued.path().display()),
            ),
        )
        .expect("write bootstrap copy");
        let check = Command::new(envoy_bin())
            .args(["--mode", "validate", "-c"])
            .arg(&local)
            .output()
            .expect("run envoy --mode validate");
        assert!(
            check.status.success(),
            "Envoy rejects {file}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let listed: BTreeSet<PathBuf> = BOOTSTRAPS.iter().map(|b| repo_root().join(b.0)).collect();
    for entry in std::fs::read_dir(repo_root().join("envoy")).expect("envoy/") {
        let path = entry.expect("envoy/ entry").path();
        let config = path.extension().is_some_and(|e| e == "json" || e == "yaml");
        assert!(
            !config || listed.contains(&path),
            "{} is not in BOOTSTRAPS, so nothing checks it",
            path.display()
        );
    }
}

/// Runs `xds-server certs --out dir` for `gateways`.
fn issue_certs(dir: &Path, gateways: &[&str]) {
    let mut cmd = Command::new(xds_server_bin());
    cmd.args(["certs", "--out"]).arg(dir);
    for g in gateways {
        cmd.args(["--gateway", g]);
    }
    let out = cmd.output().expect("run xds-server certs");
    assert!(
        out.status.success(),
        "xds-server certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn admin_ports_are_published_on_this_host_only() {
    let compose = compose();
    let listeners: BTreeSet<u16> = docker_config()
        .gateways
        .values()
        .flat_map(|g| g.listeners.iter().map(|l| l.port))
        .collect();
    for s in compose.services.values() {
        let envoy = s.image.starts_with("envoyproxy/envoy:");
        for p in &s.ports {
            // Only a gateway's own listeners face clients; everything else (Envoy's admin can
            // /quitquitquit, xds-server's shows every client) stays on this host.
            if envoy && listeners.contains(&p.container) {
                continue;
            }
            assert_eq!(
                p.host_ip.as_deref(),
                Some("127.0.0.1"),
                "{}: publishes port {} on every host interface",
                s.name,
                p.container
            );
        }
    }
}

#[test]
fn the_control_plane_has_its_own_network_and_requires_certificates() {
    let compose = compose();
    let xds = compose.running("xds-server");
    let [control] = xds.networks.as_slice() else {
        panic!(
            "xds-server: on networks {:?}, expected one of its own",
            xds.networks
        );
    };
    let mut plane: Vec<&Service> = ["authz-service", "ratelimit-service"]
        .into_iter()
        .map(|p| compose.running(p))
        .collect();
    plane.extend(
        compose
            .services
            .values()
            .filter(|s| s.image.starts_with("redis:")),
    );
    plane.push(xds);
    for s in &plane {
        assert_eq!(
            &s.networks,
            std::slice::from_ref(control),
            "{}: not on {control} alone",
            s.name
        );
    }
    for s in compose.services.values() {
        let envoy = s.image.starts_with("envoyproxy/envoy:");
        if envoy {
            assert!(
                s.networks.contains(control),
                "{}: cannot reach the control plane",
                s.name
            );
        } else if !plane.iter().any(|p| p.name == s.name) && !observes(s) {
            assert!(
                !s.networks.contains(control),
                "{}: on the control network, but not part of the control plane",
                s.name
            );
        }
    }

    // mTLS: every party holds the certificate of its node group, issued into one volume.
    let tls = compose.tls_dir();
    let issued_for = compose.issued_groups();
    for (flag, file) in [
        ("--tls-cert", "xds-server.pem"),
        ("--tls-key", "xds-server.key"),
        ("--client-ca", "ca.pem"),
    ] {
        assert_eq!(
            xds.flag(flag),
            Some(format!("{tls}/{file}").as_str()),
            "xds-server {flag}"
        );
    }
    compose.assert_mounts_tls(xds);
    for group in [proto::group::AUTHZ, proto::group::RATELIMIT] {
        let s = compose.running(group);
        for (flag, file) in [
            ("--xds-ca", "ca.pem".to_string()),
            ("--xds-tls-cert", format!("{group}.pem")),
            ("--xds-tls-key", format!("{group}.key")),
        ] {
            assert_eq!(
                s.flag(flag),
                Some(format!("{tls}/{file}").as_str()),
                "{group} {flag}"
            );
        }
        compose.assert_mounts_tls(s);
    }
    for envoy in compose.envoys() {
        let bootstrap = compose.envoy_bootstrap(envoy);
        let gateway = bootstrap["node"]["cluster"].as_str().expect("node.cluster");
        assert!(
            issued_for.iter().any(|g| g == gateway),
            "{}: no certificate is issued for its gateway {gateway}",
            envoy.name
        );
        let socket = &bootstrap["static_resources"]["clusters"][0]["transport_socket"];
        assert_eq!(
            socket["name"], "envoy.transport_sockets.tls",
            "{}: reaches xds-server without TLS",
            envoy.name
        );
        compose.assert_mounts_tls(envoy);
    }
}

/// authz-service and ratelimit-service serve their gRPC ports only to clients with a certificate
/// from the compose CA, and the gateway config gives Envoy's clusters for them that certificate:
/// a plain-text Envoy (or anyone else on the control network) gets no decision, and the demo
/// still works only if both sides name the same files of the `tls` volume.
#[test]
fn policy_ports_require_client_certificates_and_envoy_presents_one() {
    let compose = compose();
    let tls = compose.tls_dir();
    let config = docker_config();
    let auth = config.auth.as_ref().expect("the compose config has `auth`");
    let limits = config
        .rate_limits
        .as_ref()
        .expect("the compose config has `rate_limits`");
    let gateways: BTreeSet<String> = compose
        .envoys()
        .into_iter()
        .map(|e| {
            compose.envoy_bootstrap(e)["node"]["cluster"]
                .as_str()
                .expect("node.cluster")
                .to_string()
        })
        .collect();
    let issued = compose.issued_groups();
    for (group, key, address, service_tls) in [
        (
            proto::group::AUTHZ,
            "auth.service",
            &auth.service.address,
            &auth.service.tls,
        ),
        (
            proto::group::RATELIMIT,
            "rate_limits.service",
            &limits.service.address,
            &limits.service.tls,
        ),
    ] {
        // The service: its own certificate (whose DNS SAN is its group's name, see
        // `xds-server certs`) and the CA every client certificate must be signed by.
        let s = compose.running(group);
        for (flag, file) in [
            ("--tls-cert", format!("{group}.pem")),
            ("--tls-key", format!("{group}.key")),
            ("--client-ca", "ca.pem".to_string()),
        ] {
            assert_eq!(
                s.flag(flag),
                Some(format!("{tls}/{file}").as_str()),
                "{group} {flag}: its port must require client certificates"
            );
        }
        compose.assert_mounts_tls(s);
        assert_eq!(address.host, s.name, "{key}.address names another service");

        // Envoy's side: TLS checked against the same CA for the name the service's certificate
        // carries, with a certificate `xds-server certs` issues for a gateway that runs.
        let t = service_tls
            .as_ref()
            .unwrap_or_else(|| panic!("{key}.tls: Envoy would talk plain text to {group}"));
        assert_eq!(
            t.sni.as_deref(),
            Some(group),
            "{key}.tls.sni: not the name in {group}'s certificate"
        );
        assert_eq!(
            t.ca_file.as_deref(),
            Some(Path::new(&format!("{tls}/ca.pem"))),
            "{key}.tls.ca_file: {group}'s certificate would go unchecked"
        );
        let client = t
            .client_cert
            .as_ref()
            .unwrap_or_else(|| panic!("{key}.tls: no client certificate, {group} refuses Envoy"));
        let holder = client
            .cert_file
            .strip_prefix(&tls)
            .ok()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".pem"))
            .unwrap_or_else(|| {
                panic!(
                    "{key}.tls.cert_file {}: not a certificate in {tls}",
                    client.cert_file.display()
                )
            });
        assert!(
            gateways.contains(holder) && issued.iter().any(|g| g == holder),
            "{key}.tls.cert_file: {holder} is not a gateway whose certificate is issued \
             (gateways {gateways:?}, issued {issued:?})"
        );
        assert_eq!(
            client.key_file,
            Path::new(&format!("{tls}/{holder}.key")),
            "{key}.tls.key_file: not the key of {holder}.pem"
        );
    }
    // The files exist once `xds-server certs` ran with the compose arguments, and xds-server
    // (which reads them and hands them to Envoy inline) mounts the volume they are in.
    let standin = docker_config_in_container(&compose);
    let issued_files: BTreeSet<&Path> = standin
        .loaded
        .files
        .keys()
        .filter_map(|f| f.strip_prefix(&standin.tls).ok())
        .collect();
    for name in ["ca.pem", "edge.pem", "edge.key"] {
        assert!(
            issued_files.contains(Path::new(name)),
            "{DOCKER_CONFIG} does not read {tls}/{name}: {issued_files:?}"
        );
    }
    compose.assert_mounts_tls(compose.running("xds-server"));
}

/// Validating the bootstraps proves something about the containers only if the validating Envoy
/// is the version the compose Envoys run.
#[test]
fn compose_envoys_run_the_envoy_version_the_tests_use() {
    let script = read("scripts/ensure-envoy");
    let version = script
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION="))
        .expect("scripts/ensure-envoy sets ENVOY_VERSION")
        .trim_matches('"');
    let compose = compose();
    let envoys = compose.envoys();
    assert!(envoys.len() >= 2, "the stack runs two Envoy replicas");
    for s in envoys {
        assert_eq!(
            s.image,
            format!("envoyproxy/envoy:v{version}"),
            "{}: not the Envoy scripts/ensure-envoy installs for the tests",
            s.name
        );
    }
}

#[test]
fn every_image_is_built_here_or_pinned_and_contains_what_the_service_runs() {
    let compose = compose();
    for s in compose.services.values() {
        let Some(dockerfile) = compose.dockerfile_of(s) else {
            let tag = pinned_tag(&s.image)
                .unwrap_or_else(|| panic!("{}: image {} is not pinned to a tag", s.name, s.image));
            assert!(
                is_version(tag),
                "{}: image {} is not pinned to a version (tag {tag:?})",
                s.name,
                s.image
            );
            continue;
        };
        let image = Dockerfile::read(&dockerfile);
        let programs = image.final_programs();
        let run = s.command.first().unwrap_or_else(|| {
            panic!(
                "{}: our image has no default command; name the binary",
                s.name
            )
        });
        assert!(
            programs.contains(run),
            "{}: runs {run}, but the final stage of {} only has {programs:?}",
            s.name,
            dockerfile.display()
        );
        if let Some(probe) = s.healthcheck.get(1) {
            assert_eq!(
                s.healthcheck[0], "CMD",
                "{}: exec-form healthcheck, please",
                s.name
            );
            assert!(
                programs.contains(probe),
                "{}: the healthcheck runs {probe}, which {} does not install",
                s.name,
                dockerfile.display()
            );
        }
    }
}

#[test]
fn the_dockerfile_builds_every_binary_it_copies_from_pinned_bases() {
    let compose = compose();
    let dockerfiles: BTreeSet<PathBuf> = compose
        .services
        .values()
        .filter_map(|s| compose.dockerfile_of(s))
        .collect();
    assert!(
        !dockerfiles.is_empty(),
        "no service is built from a Dockerfile"
    );
    for path in dockerfiles {
        let image = Dockerfile::read(&path);
        let built = image.cargo_bins();
        for bin in &built {
            // Panics unless the workspace build produced a binary of that name.
            workspace_bin(bin);
        }
        for copied in image.final_copied() {
            assert!(
                built.contains(&copied),
                "{}: copies {copied} but `cargo build` builds only {built:?}",
                path.display()
            );
        }
        let stages: Vec<&str> = image
            .stages
            .iter()
            .filter_map(|s| s.alias.as_deref())
            .collect();
        for stage in &image.stages {
            if stages.contains(&stage.base.as_str()) {
                continue;
            }
            assert!(
                pinned_tag(&stage.base).is_some(),
                "{}: base image {} is not pinned to a tag",
                path.display(),
                stage.base
            );
        }
    }
}

#[test]
fn gateway_config_addresses_are_compose_services_and_their_ports() {
    let compose = compose();
    let config = docker_config();

    let auth = config.auth.as_ref().expect("the compose config has `auth`");
    compose.assert_listens(
        &auth.service.address,
        "authz-service",
        "auth.service.address",
    );
    let limits = config
        .rate_limits
        .as_ref()
        .expect("the compose config has `rate_limits`");
    compose.assert_listens(
        &limits.service.address,
        "ratelimit-service",
        "rate_limits.service.address",
    );
    for (name, service) in &config.services {
        for endpoint in &service.endpoints {
            compose.assert_listens(endpoint, "echo-upstream", &format!("services.{name}"));
        }
    }

    let xds = compose.xds_address();
    for s in compose.services.values() {
        for listen in ["--listen", "--admin"]
            .into_iter()
            .filter_map(|f| s.flag(f))
        {
            assert!(
                listen.starts_with("0.0.0.0:"),
                "{}: listens on {listen}, unreachable from other containers",
                s.name
            );
        }
        if let Some(to) = s.flag("--xds") {
            assert_eq!(to, xds, "{}: --xds does not name xds-server", s.name);
        }
        if let Some(url) = s.flag("--redis") {
            let target = url
                .strip_prefix("redis://")
                .expect("--redis redis://host:port");
            let target = target.split('/').next().unwrap_or_default();
            let redis = compose.service(target.split(':').next().unwrap_or_default());
            assert!(
                redis.image.starts_with("redis:"),
                "{}: --redis {url} is not Redis",
                s.name
            );
            assert_eq!(
                target,
                format!("{}:{REDIS_DEFAULT_PORT}", redis.name),
                "{}: --redis names the wrong port",
                s.name
            );
        }
    }

    let mut node_ids = BTreeSet::new();
    for envoy in compose.envoys() {
        let bootstrap = compose.envoy_bootstrap(envoy);
        let node = &bootstrap["node"];
        let id = node["id"].as_str().expect("node.id");
        assert!(
            node_ids.insert(id.to_string()),
            "{}: node id {id} is taken",
            envoy.name
        );
        let gateway = node["cluster"].as_str().expect("node.cluster");
        let gateway = config.gateways.get(gateway).unwrap_or_else(|| {
            panic!(
                "{}: node.cluster {gateway} is not a gateway of {DOCKER_CONFIG}",
                envoy.name
            )
        });
        for listener in &gateway.listeners {
            assert_eq!(
                listener.address, "0.0.0.0",
                "listener {}: a published port reaches only a listener on all addresses",
                listener.name
            );
            assert!(
                envoy.ports.iter().any(|p| p.container == listener.port),
                "{}: does not publish listener {} (port {})",
                envoy.name,
                listener.name,
                listener.port
            );
        }
    }

    let mut host_ports = BTreeSet::new();
    for s in compose.services.values() {
        for port in s.ports.iter().filter_map(|p| p.host) {
            assert!(
                host_ports.insert(port),
                "{}: host port {port} is published twice",
                s.name
            );
        }
    }
}

#[test]
fn mounts_exist_and_cover_every_file_the_config_reads() {
    let compose = compose();
    for s in compose.services.values() {
        for m in &s.mounts {
            assert!(
                m.host.exists(),
                "{}: mounts {}, which does not exist",
                s.name,
                m.host.display()
            );
        }
    }

    let xds = compose.running("xds-server");
    let config_in_container = Path::new(xds.flag("--config").expect("xds-server --config"));
    let host_config = repo_root().join(DOCKER_CONFIG);
    assert_eq!(
        xds.host_path(config_in_container).as_deref(),
        Some(host_config.as_path()),
        "xds-server's --config {} is not {DOCKER_CONFIG}",
        config_in_container.display()
    );
    // Relative paths in the config resolve against its directory, on the host and in the
    // container alike; each file must be mounted where that resolution looks for it. Absolute
    // ones must be certificates in the `tls` volume.
    let host_dir = host_config.parent().expect("config directory");
    let container_dir = config_in_container.parent().expect("config directory");
    let tls = compose.tls_dir();
    let standin = docker_config_in_container(&compose);
    assert!(
        !standin.loaded.files.is_empty(),
        "{DOCKER_CONFIG} reads no files (the API keys file?)"
    );
    for file in standin.loaded.files.keys() {
        if let Ok(issued) = file.strip_prefix(&standin.tls) {
            compose.assert_mounts_tls(xds);
            // The load read it from a fresh `xds-server certs` run, so it is one that writes.
            eprintln!(
                "{}: issued by `xds-server certs` into {tls}",
                issued.display()
            );
            continue;
        }
        let relative = file.strip_prefix(&standin.config_dir).unwrap_or_else(|_| {
            panic!(
                "{DOCKER_CONFIG} reads {}, which is neither beside it nor in {tls}",
                file.display()
            )
        });
        let on_host = host_dir.join(relative);
        assert_eq!(
            xds.host_path(&container_dir.join(relative)).as_ref(),
            Some(&on_host),
            "xds-server cannot read {} in its container",
            on_host.display()
        );
    }

    let committed: BTreeSet<PathBuf> = BOOTSTRAPS.iter().map(|b| repo_root().join(b.0)).collect();
    for envoy in compose.envoys() {
        let bootstrap = compose.envoy_bootstrap_path(envoy);
        assert!(
            committed.contains(&bootstrap),
            "{}: runs {}, which is not a committed bootstrap",
            envoy.name,
            bootstrap.display()
        );
    }
}

#[test]
fn dependencies_exist_and_healthchecks_back_them() {
    let compose = compose();
    for s in compose.services.values() {
        for (dep, condition) in &s.depends_on {
            let target = compose
                .services
                .get(dep)
                .unwrap_or_else(|| panic!("{}: depends on {dep}, which is not a service", s.name));
            match condition.as_str() {
                "service_started" | "service_completed_successfully" => {}
                "service_healthy" => assert!(
                    !target.healthcheck.is_empty(),
                    "{}: waits for {dep} to be healthy, but {dep} has no healthcheck",
                    s.name
                ),
                other => panic!("{}: unknown depends_on condition {other}", s.name),
            }
        }
        // A service that names another in a flag must not start before it.
        for flag in ["--xds", "--redis"] {
            let Some(value) = s.flag(flag) else { continue };
            let host = value
                .trim_start_matches("redis://")
                .split(':')
                .next()
                .unwrap_or_default();
            assert!(
                s.depends_on
                    .iter()
                    .any(|(d, c)| d == host && c == "service_healthy"),
                "{}: {flag} {value}, but it does not wait for {host} to be healthy",
                s.name
            );
        }
        // A healthcheck of our side port must probe the port the service serves it on (a demo
        // upstream has none; its one port answers /health).
        if let Some(url) = s.healthcheck.iter().find(|a| a.starts_with("http://")) {
            let (flag, path) = match s.flag("--admin") {
                Some(_) => ("--admin", "/readyz"),
                None => ("--listen", "/health"),
            };
            let addr = s
                .flag(flag)
                .unwrap_or_else(|| panic!("{}: probed, but sets no {flag}", s.name));
            let port = addr.rsplit(':').next().unwrap_or_default();
            assert_eq!(
                url,
                &format!("http://127.0.0.1:{port}{path}"),
                "{}: the healthcheck probes {url}, but {flag} is {addr}",
                s.name
            );
        }
    }
    let xds = compose.running("xds-server");
    for envoy in compose.envoys() {
        assert!(
            envoy
                .depends_on
                .iter()
                .any(|(d, c)| *d == xds.name && c == "service_healthy"),
            "{}: starts before xds-server is ready",
            envoy.name
        );
    }
}

#[test]
fn compose_example_config_is_valid_and_its_secrets_and_keys_are_usable() {
    let compose = compose();
    // As xds-server sees it in its container, certificates included.
    let standin = docker_config_in_container(&compose);
    let out = validate(&standin.path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config = docker_config();
    let auth = config.auth.as_ref().expect("the compose config has `auth`");
    let authz = compose.running("authz-service");
    for (name, provider) in &auth.jwt {
        if let JwtKeys::SecretEnv(var) = &provider.keys {
            let secret = authz
                .environment
                .get(var)
                .unwrap_or_else(|| panic!("jwt.{name}: authz-service's environment has no {var}"));
            // The spec's minimum for an HS* secret.
            assert!(secret.len() >= 32, "{var}: shorter than 32 bytes");
        }
    }
    // The demo keys file must also survive authz-service's own edit path: have it read (and
    // rewrite) a copy.
    for (name, provider) in &auth.api_keys {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join("keys.yaml");
        std::fs::copy(&provider.keys_file, &copy).expect("copy the keys file");
        let text = std::fs::read_to_string(&copy).expect("keys file");
        let id = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("- id: "))
            .unwrap_or_else(|| panic!("api_keys.{name}: the keys file has no key"))
            .trim_matches('"');
        let out = Command::new(workspace_bin("authz-service"))
            .args(["apikey", "revoke", "--id", id, "--keys-file"])
            .arg(&copy)
            .output()
            .expect("run authz-service apikey revoke");
        assert!(
            out.status.success(),
            "api_keys.{name}: authz-service cannot read {}: {}",
            provider.keys_file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The compose config is the local example with container addresses: a plan, route or provider
/// changed in one file only would make `docker compose up` demonstrate another gateway. The
/// additions allowed are API-key providers the local example does not have yet, and TLS to the
/// policy services (its certificates exist only in the containers; checked by
/// `policy_ports_require_client_certificates_and_envoy_presents_one`).
#[test]
fn compose_config_differs_from_the_local_example_only_in_addresses() {
    let local = load(LOCAL_CONFIG).config;
    let mut docker = docker_config();
    if let Some(auth) = docker.auth.as_mut() {
        let known = local.auth.as_ref().map(|a| &a.api_keys);
        auth.api_keys
            .retain(|name, _| known.is_some_and(|k| k.contains_key(name)));
        let providers: BTreeSet<String> = auth
            .jwt
            .keys()
            .chain(auth.api_keys.keys())
            .cloned()
            .collect();
        for gateway in docker.gateways.values_mut() {
            for route in &mut gateway.routes {
                if let RouteAuth::Providers(names) = &mut route.auth {
                    names.retain(|n| providers.contains(n));
                }
            }
        }
    }
    assert_eq!(
        without_addresses(docker),
        without_addresses(local),
        "{DOCKER_CONFIG} and {LOCAL_CONFIG} differ in more than addresses"
    );
}

/// `config` with every host and listener address and the policy services' TLS blanked, ports
/// kept. (Other file paths need no blanking: both configs live in `examples/`, so the same
/// relative path resolves alike.)
fn without_addresses(mut config: Config) -> Config {
    let blank = |a: &mut HostPort| a.host.clear();
    for service in config.services.values_mut() {
        service.endpoints.iter_mut().for_each(blank);
    }
    if let Some(auth) = config.auth.as_mut() {
        blank(&mut auth.service.address);
        auth.service.tls = None;
    }
    if let Some(limits) = config.rate_limits.as_mut() {
        blank(&mut limits.service.address);
        limits.service.tls = None;
    }
    for gateway in config.gateways.values_mut() {
        gateway.listeners.iter_mut().for_each(|l| l.address.clear());
    }
    config
}

// ---- the files ----

/// Prometheus and the OpenTelemetry collector join the control network to scrape the side
/// ports and take spans; they hold no certificate, so every gRPC port there refuses them.
fn observes(s: &Service) -> bool {
    s.image.starts_with("prom/prometheus:") || s.image.starts_with("otel/opentelemetry-collector:")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(path: &str) -> config::Loaded {
    config::load(&repo_root().join(path)).unwrap_or_else(|e| panic!("{e}"))
}

/// The compose config, decoded and validated without reading the files it names: some of them
/// (the certificates under the `tls` volume) exist only in the containers.
fn docker_config() -> Config {
    config::parse(&read(DOCKER_CONFIG), &repo_root().join(DOCKER_CONFIG))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The compose config loaded the way xds-server loads it in its container, on this host: its
/// directory is a stand-in for the `examples/` bind mount (every entry a symlink to the
/// original), and the paths under the `tls` volume point at a fresh `xds-server certs` run with
/// the compose `certs` service's arguments. So a load that succeeds proves the config reads no
/// certificate that `xds-server certs` does not write.
struct InContainer {
    /// Keeps the stand-in alive.
    _dir: tempfile::TempDir,
    /// The stand-in for xds-server's config directory.
    config_dir: PathBuf,
    /// The stand-in for the `tls` volume.
    tls: PathBuf,
    /// The rewritten config file in `config_dir`.
    path: PathBuf,
    loaded: config::Loaded,
}

fn docker_config_in_container(compose: &Compose) -> InContainer {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&config_dir).expect("config dir");
    let examples = repo_root().join(DOCKER_CONFIG);
    let examples = examples.parent().expect("config directory");
    for entry in std::fs::read_dir(examples).expect("examples/") {
        let entry = entry.expect("examples/ entry");
        std::os::unix::fs::symlink(entry.path(), config_dir.join(entry.file_name()))
            .expect("symlink into the stand-in");
    }
    let issuer = compose.cert_issuer();
    let gateways: Vec<&str> = issuer.flags("--gateway").collect();
    issue_certs(&tls, &gateways);
    let text = read(DOCKER_CONFIG).replace(
        &format!("{}/", compose.tls_dir()),
        &format!("{}/", tls.display()),
    );
    let name = Path::new(DOCKER_CONFIG).file_name().expect("file name");
    let path = config_dir.join(name);
    std::fs::remove_file(&path).expect("drop the symlink to the original");
    std::fs::write(&path, text).expect("write the rewritten config");
    let loaded = config::load(&path).unwrap_or_else(|e| {
        panic!(
            "{DOCKER_CONFIG} with the certificates `xds-server certs` writes in {}:\n{e}",
            compose.tls_dir()
        )
    });
    InContainer {
        _dir: dir,
        config_dir,
        tls,
        path,
        loaded,
    }
}

/// The tag of `image`, unless it has none or it is `latest` (which moves). A digest pins too. A
/// registry's port (`host:5000/name`) is not a tag, so only the last path segment is searched.
fn pinned_tag(image: &str) -> Option<&str> {
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest);
    }
    let (_, tag) = image.rsplit('/').next()?.split_once(':')?;
    (!tag.is_empty() && tag != "latest").then_some(tag)
}

/// `7.4.2-bookworm`, `v1.40.0`: a release number, not a moving name such as `stable`.
fn is_version(tag: &str) -> bool {
    tag.trim_start_matches('v')
        .starts_with(|c: char| c.is_ascii_digit())
}

/// `docker-compose.yml`, as far as these checks need it.
struct Compose {
    services: BTreeMap<String, Service>,
}

struct Service {
    name: String,
    image: String,
    /// Set when the service has `build:`.
    dockerfile: Option<PathBuf>,
    /// Exec form; `[]` when the image's default command runs.
    command: Vec<String>,
    mounts: Vec<Mount>,
    ports: Vec<Published>,
    /// (service, condition)
    depends_on: Vec<(String, String)>,
    /// `[CMD, program, args…]`; `[]` without a healthcheck.
    healthcheck: Vec<String>,
    environment: BTreeMap<String, String>,
    /// Named volumes: (volume, container path).
    volumes: Vec<(String, PathBuf)>,
    networks: Vec<String>,
}

/// A bind mount; `host` is absolute (compose resolves it against the compose file's directory).
struct Mount {
    host: PathBuf,
    container: PathBuf,
}

struct Published {
    /// The host address it is bound to; `None`: every interface.
    host_ip: Option<String>,
    host: Option<u16>,
    container: u16,
}

fn compose() -> Compose {
    let docs = YamlLoader::load_from_str(&read(COMPOSE)).expect("docker-compose.yml is YAML");
    let services = docs
        .first()
        .and_then(|d| d["services"].as_hash())
        .expect("docker-compose.yml has `services`");
    let services = services
        .iter()
        .map(|(name, s)| {
            let name = name.as_str().expect("service name").to_string();
            let service = Service::parse(&name, s);
            (name, service)
        })
        .collect();
    Compose { services }
}

impl Compose {
    fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("{COMPOSE} has no service {name:?}"))
    }

    /// Whether `s` is a one-shot step others wait to complete (such as issuing certificates).
    fn is_init(&self, s: &Service) -> bool {
        self.services.values().any(|o| {
            o.depends_on
                .iter()
                .any(|(d, c)| *d == s.name && c == "service_completed_successfully")
        })
    }

    /// The one long-running service whose command runs `program`.
    fn running(&self, program: &str) -> &Service {
        let mut found = self
            .services
            .values()
            .filter(|s| s.command.first().map(String::as_str) == Some(program) && !self.is_init(s));
        let service = found
            .next()
            .unwrap_or_else(|| panic!("no service runs {program}"));
        assert!(found.next().is_none(), "several services run {program}");
        service
    }

    fn envoys(&self) -> Vec<&Service> {
        self.services
            .values()
            .filter(|s| s.image.starts_with("envoyproxy/envoy:"))
            .collect()
    }

    /// Where other containers reach xds-server's ADS port: its service name and `--listen` port.
    fn xds_address(&self) -> String {
        let xds = self.running("xds-server");
        let listen = xds.flag("--listen").expect("xds-server --listen");
        format!(
            "{}:{}",
            xds.name,
            listen.rsplit(':').next().unwrap_or_default()
        )
    }

    /// Asserts that `address` is a service running `program` that listens on that port.
    fn assert_listens(&self, address: &HostPort, program: &str, what: &str) {
        let s = self.service(&address.host);
        assert_eq!(
            s.command.first().map(String::as_str),
            Some(program),
            "{what}: {}",
            s.name
        );
        let listen = s
            .flag("--listen")
            .unwrap_or_else(|| panic!("{}: no --listen", s.name));
        assert_eq!(
            listen.rsplit(':').next(),
            Some(address.port.to_string().as_str()),
            "{what} is {}:{}, but {} listens on {listen}",
            address.host,
            address.port,
            s.name
        );
    }

    /// Our Dockerfile for `s`: its own `build:`, or that of the service building its image
    /// (compose builds it once and ignores a failed pull of it for the services sharing it).
    fn dockerfile_of(&self, s: &Service) -> Option<PathBuf> {
        s.dockerfile.clone().or_else(|| {
            self.services
                .values()
                .find(|b| b.image == s.image && b.dockerfile.is_some())
                .and_then(|b| b.dockerfile.clone())
        })
    }

    /// The host file an Envoy service's `-c` reads.
    fn envoy_bootstrap_path(&self, envoy: &Service) -> PathBuf {
        let c = envoy
            .flag("-c")
            .unwrap_or_else(|| panic!("{}: no -c", envoy.name));
        envoy
            .host_path(Path::new(c))
            .unwrap_or_else(|| panic!("{}: -c {c} is not mounted", envoy.name))
    }

    /// The one-shot service that runs `xds-server certs`.
    fn cert_issuer(&self) -> &Service {
        let issuer = self
            .services
            .values()
            .find(|s| {
                s.command
                    .starts_with(&["xds-server".into(), "certs".into()])
            })
            .unwrap_or_else(|| panic!("no service runs `xds-server certs`"));
        assert!(
            self.is_init(issuer),
            "{}: nothing waits for the certificates to be issued",
            issuer.name
        );
        issuer
    }

    /// Where the certificates `xds-server certs` issues are, in every container: its `--out`.
    fn tls_dir(&self) -> String {
        self.cert_issuer()
            .flag("--out")
            .expect("xds-server certs --out")
            .trim_end_matches('/')
            .to_string()
    }

    /// The node groups `xds-server certs` issues a certificate for: its `--gateway`s, and the
    /// two policy services, which always get one.
    fn issued_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .cert_issuer()
            .flags("--gateway")
            .map(String::from)
            .collect();
        groups.extend([proto::group::AUTHZ, proto::group::RATELIMIT].map(String::from));
        groups
    }

    /// Asserts that `s` mounts the volume `xds-server certs` writes into, where it writes, and
    /// cannot start before the certificates exist.
    fn assert_mounts_tls(&self, s: &Service) {
        let issuer = self.cert_issuer();
        let tls = self.tls_dir();
        let (volume, _) = issuer
            .volumes
            .iter()
            .find(|(_, at)| at == Path::new(&tls))
            .unwrap_or_else(|| panic!("{}: --out {tls} is not a named volume", issuer.name));
        assert!(
            s.volumes
                .iter()
                .any(|(v, at)| v == volume && at == Path::new(&tls)),
            "{}: does not mount the {volume} volume at {tls}",
            s.name
        );
        let xds = self.running("xds-server");
        assert!(
            s.depends_on
                .iter()
                .any(|(d, c)| *d == issuer.name && c == "service_completed_successfully")
                || s.depends_on.iter().any(|(d, _)| *d == xds.name),
            "{}: may start before the certificates exist",
            s.name
        );
    }

    fn envoy_bootstrap(&self, envoy: &Service) -> serde_json::Value {
        let path = self.envoy_bootstrap_path(envoy);
        let text = std::fs::read_to_string(&path).expect("bootstrap");
        serde_json::from_str(&text).expect("bootstrap is JSON")
    }
}

impl Service {
    fn parse(name: &str, y: &Yaml) -> Service {
        let strings = |y: &Yaml, what: &str| -> Vec<String> {
            match y {
                Yaml::BadValue => vec![],
                Yaml::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .unwrap_or_else(|| panic!("{name}.{what}: not a string list"))
                            .to_string()
                    })
                    .collect(),
                // A string command would go through a shell; the list form is what runs.
                _ => panic!("{name}.{what}: write it as a list of strings"),
            }
        };
        let dockerfile = match &y["build"] {
            Yaml::BadValue => None,
            Yaml::String(context) => Some(repo_root().join(context).join("Dockerfile")),
            build => {
                let context = build["context"].as_str().unwrap_or(".");
                let file = build["dockerfile"].as_str().unwrap_or("Dockerfile");
                Some(repo_root().join(context).join(file))
            }
        };
        let mounts = strings(&y["volumes"], "volumes")
            .iter()
            // Bind mounts only; a named volume (`data:/data`) has no file in the repository.
            .filter(|v| v.starts_with('.') || v.starts_with('/'))
            .map(|v| {
                let mut parts = v.split(':');
                let host = parts.next().unwrap_or_default();
                let container = parts.next().expect("host:container");
                Mount {
                    host: normalize(&repo_root().join(host)),
                    container: container.into(),
                }
            })
            .collect();
        let ports = strings(&y["ports"], "ports")
            .iter()
            .map(|p| {
                let parts: Vec<&str> = p.split(':').collect();
                let port = |s: &str| s.parse().unwrap_or_else(|_| panic!("{name}: port {p}"));
                Published {
                    host_ip: (parts.len() > 2).then(|| parts[0].to_string()),
                    host: (parts.len() > 1).then(|| port(parts[parts.len() - 2])),
                    container: port(parts[parts.len() - 1]),
                }
            })
            .collect();
        let depends_on = match &y["depends_on"] {
            Yaml::Hash(deps) => deps
                .iter()
                .map(|(dep, how)| {
                    let condition = how["condition"].as_str().unwrap_or("service_started");
                    (dep.as_str().expect("service name").into(), condition.into())
                })
                .collect(),
            other => strings(other, "depends_on")
                .into_iter()
                .map(|dep| (dep, "service_started".into()))
                .collect(),
        };
        let environment = match &y["environment"] {
            Yaml::Hash(vars) => vars
                .iter()
                .map(|(k, v)| (k.as_str().expect("variable name").into(), scalar(v)))
                .collect(),
            other => strings(other, "environment")
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        };
        Service {
            name: name.into(),
            image: y["image"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no image"))
                .into(),
            dockerfile,
            command: strings(&y["command"], "command"),
            mounts,
            ports,
            depends_on,
            healthcheck: strings(&y["healthcheck"]["test"], "healthcheck.test"),
            environment,
            volumes: strings(&y["volumes"], "volumes")
                .iter()
                .filter(|v| !v.starts_with('.') && !v.starts_with('/'))
                .filter_map(|v| {
                    let mut parts = v.split(':');
                    Some((parts.next()?.to_string(), parts.next()?.into()))
                })
                .collect(),
            networks: strings(&y["networks"], "networks"),
        }
    }

    /// The value after `flag` in the command (`--flag value` or `--flag=value`).
    fn flag(&self, flag: &str) -> Option<&str> {
        let mut args = self.command.iter();
        while let Some(arg) = args.next() {
            if arg == flag {
                return args.next().map(String::as_str);
            }
            if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
        None
    }

    /// Every value of a repeatable `flag` (`--flag value` only).
    fn flags<'a>(&'a self, flag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.command
            .windows(2)
            .filter(move |w| w[0] == flag)
            .map(|w| w[1].as_str())
    }

    /// The host file behind `container` (a path inside this service's container), if mounted.
    fn host_path(&self, container: &Path) -> Option<PathBuf> {
        self.mounts.iter().find_map(|m| {
            let rest = container.strip_prefix(&m.container).ok()?;
            Some(normalize(&m.host.join(rest)))
        })
    }
}

/// A scalar as the container sees it: numbers and booleans in `environment:` are strings there.
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

/// `path` without `.` segments (and with `..` applied), as compose resolves a relative mount.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A Dockerfile, as far as these checks need it: its stages and their instructions.
struct Dockerfile {
    stages: Vec<Stage>,
}

struct Stage {
    base: String,
    alias: Option<String>,
    /// Every instruction after `FROM`, continuation lines joined, comments dropped.
    instructions: Vec<String>,
}

impl Dockerfile {
    fn read(path: &Path) -> Dockerfile {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(part) => current.push_str(part),
                None => {
                    current.push_str(line);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stages: Vec<Stage> = Vec::new();
        for instruction in logical {
            let words: Vec<&str> = instruction.split_whitespace().collect();
            if words
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
            {
                let words: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                stages.push(Stage {
                    base: words.first().expect("FROM image").to_string(),
                    alias: words
                        .iter()
                        .position(|w| w.eq_ignore_ascii_case("AS"))
                        .and_then(|i| words.get(i + 1))
                        .map(|a| a.to_string()),
                    instructions: vec![],
                });
            } else {
                let stage = stages.last_mut().expect("a Dockerfile starts with FROM");
                stage.instructions.push(instruction);
            }
        }
        assert!(!stages.is_empty(), "{}: no FROM", path.display());
        Dockerfile { stages }
    }

    fn last(&self) -> &Stage {
        self.stages.last().expect("a stage")
    }

    /// The file names the final stage copies from an earlier stage (the binaries we built).
    fn final_copied(&self) -> BTreeSet<String> {
        let mut copied = BTreeSet::new();
        for words in self.last().words("COPY") {
            if !words.iter().any(|w| w.starts_with("--from=")) {
                continue;
            }
            let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
            let sources = &paths[..paths.len().saturating_sub(1)];
            copied.extend(
                sources
                    .iter()
                    .filter_map(|s| s.rsplit('/').next())
                    .map(String::from),
            );
        }
        copied
    }

    /// The programs the final image has that compose may run: the copied binaries and the
    /// packages installed with apt-get (here named like their program, e.g. `curl`).
    fn final_programs(&self) -> BTreeSet<String> {
        let mut programs = self.final_copied();
        for words in self.last().words("RUN") {
            for (i, pair) in words.windows(2).enumerate() {
                if pair == ["apt-get", "install"] {
                    let args = words[i + 2..].iter().take_while(|w| **w != "&&");
                    programs.extend(args.filter(|w| !w.starts_with('-')).map(|w| w.to_string()));
                }
            }
        }
        programs
    }

    /// Every `--bin` of every `cargo build` in the file.
    fn cargo_bins(&self) -> BTreeSet<String> {
        let mut bins = BTreeSet::new();
        for stage in &self.stages {
            for words in stage.words("RUN") {
                if !words.windows(2).any(|w| w == ["cargo", "build"]) {
                    continue;
                }
                let mut it = words.iter();
                while let Some(w) = it.next() {
                    if *w == "--bin" {
                        bins.insert(it.next().expect("--bin name").to_string());
                    }
                }
            }
        }
        bins
    }
}

impl Stage {
    /// The words of each `keyword` instruction after the keyword.
    fn words(&self, keyword: &str) -> Vec<Vec<&str>> {
        self.instructions
            .iter()
            .filter_map(|i| {
                let mut words = i.split_whitespace();
                let first = words.next()?;
                first.eq_ignore_ascii_case(keyword).then(|| words.collect())
            })
            .collect()
    }
}
