//! The Kubernetes manifests under deploy/kubernetes/ agree with each other, with the code and
//! with docker-compose.yml, checked without a cluster: every document parses and is of a kind we
//! know; kustomization.yaml lists every file; Service selectors and PodDisruptionBudgets select
//! pods of a Deployment and name ports those pods declare; every ConfigMap, Secret and key a pod
//! uses exists (the two Secrets the operator creates are the ones the README's commands create);
//! probes ask ports the container declares (our services: the `--admin` side port's /readyz);
//! every container is non-root, read-only, without capabilities and with resource requests; the
//! gateway config is examples/gateway.docker.yaml and its addresses name Services and ports here;
//! the Envoy bootstrap is `xds-server bootstrap` output; every image is the one compose runs the
//! same program with, and every HorizontalPodAutoscaler scales a Deployment that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use config::Config;
use tests::repo_root;
use tests::xds::xds_server_bin;
use yaml_rust2::{Yaml, YamlLoader};

const DIR: &str = "deploy/kubernetes";

struct Doc {
    file: String,
    y: Yaml,
}

impl Doc {
    fn kind(&self) -> &str {
        self.y["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.y["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn what(&self) -> String {
        format!("{} {}/{}", self.file, self.kind(), self.name())
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docs() -> Vec<Doc> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join(DIR))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = read(&format!("{DIR}/{file}"));
        let parsed = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!parsed.is_empty(), "{file}: no document");
        for y in parsed {
            out.push(Doc {
                file: file.clone(),
                y,
            });
        }
    }
    out
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_default()
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn labels(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
        .collect()
}

fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

fn deployments(docs: &[Doc]) -> Vec<&Doc> {
    docs.iter().filter(|d| d.kind() == "Deployment").collect()
}

/// A port of a container named by number or by name: its number, if declared.
fn container_port(c: &Yaml, port: &Yaml) -> Option<i64> {
    list(&c["ports"]).iter().find_map(|p| {
        let n = p["containerPort"].as_i64()?;
        (port.as_i64() == Some(n) || (port.as_str().is_some() && p["name"] == *port)).then_some(n)
    })
}

fn command(c: &Yaml) -> Vec<&str> {
    list(&c["command"]).iter().map(s).collect()
}

fn flag<'a>(cmd: &[&'a str], f: &str) -> Option<&'a str> {
    cmd.iter()
        .position(|a| *a == f)
        .and_then(|i| cmd.get(i + 1))
        .copied()
}

#[test]
fn every_document_parses_and_kustomization_lists_every_file() {
    let known: BTreeMap<&str, &str> = [
        ("Deployment", "apps/v1"),
        ("Service", "v1"),
        ("ConfigMap", "v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
    ]
    .into();
    let docs = docs();
    let mut names = BTreeSet::new();
    for d in &docs {
        let api = known
            .get(d.kind())
            .unwrap_or_else(|| panic!("{}: unknown kind", d.what()));
        assert_eq!(s(&d.y["apiVersion"]), *api, "{}", d.what());
        assert!(!d.name().is_empty(), "{}: no metadata.name", d.what());
        assert!(
            names.insert((d.kind().to_string(), d.name().to_string())),
            "{}: defined twice",
            d.what()
        );
    }
    let k = &YamlLoader::load_from_str(&read(&format!("{DIR}/kustomization.yaml")))
        .expect("kustomization.yaml")[0];
    let listed: BTreeSet<&str> = list(&k["resources"]).iter().map(s).collect();
    let files: BTreeSet<&str> = docs.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        listed, files,
        "kustomization.yaml resources vs the files in {DIR}"
    );
}

#[test]
fn selectors_ports_and_references_resolve() {
    let docs = docs();
    let deps = deployments(&docs);
    let config_maps: BTreeMap<&str, &Yaml> = docs
        .iter()
        .filter(|d| d.kind() == "ConfigMap")
        .map(|d| (d.name(), &d.y["data"]))
        .collect();
    let secrets = operator_secrets();
    for d in &deps {
        let spec = &d.y["spec"];
        let pod_labels = labels(&spec["template"]["metadata"]["labels"]);
        assert!(
            selects(&labels(&spec["selector"]["matchLabels"]), &pod_labels),
            "{}: its selector does not match its pods",
            d.what()
        );
        let pod = &spec["template"]["spec"];
        let volumes: BTreeMap<&str, &Yaml> = list(&pod["volumes"])
            .iter()
            .map(|v| (s(&v["name"]), v))
            .collect();
        for v in volumes.values() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(
                    config_maps.contains_key(cm),
                    "{}: no ConfigMap {cm}",
                    d.what()
                );
            }
            if let Some(secret) = v["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains_key(secret),
                    "{}: no Secret {secret}",
                    d.what()
                );
            }
        }
        for c in list(&pod["containers"]) {
            let cname = s(&c["name"]);
            for m in list(&c["volumeMounts"]) {
                assert!(
                    volumes.contains_key(s(&m["name"])),
                    "{}: {cname} mounts an undeclared volume",
                    d.what()
                );
            }
            for e in list(&c["env"]) {
                let cm = &e["valueFrom"]["configMapKeyRef"];
                if let Some(name) = cm["name"].as_str() {
                    let data = config_maps
                        .get(name)
                        .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", d.what()));
                    assert!(
                        !data[s(&cm["key"])].is_badvalue(),
                        "{}: {name} has no key {}",
                        d.what(),
                        s(&cm["key"])
                    );
                }
                let sk = &e["valueFrom"]["secretKeyRef"];
                if let Some(name) = sk["name"].as_str() {
                    let keys = secrets
                        .get(name)
                        .unwrap_or_else(|| panic!("{}: no Secret {name}", d.what()));
                    let key = s(&sk["key"]);
                    assert!(
                        keys.iter().any(|k| k == key || k == "*"),
                        "{}: Secret {name} has no key {}",
                        d.what(),
                        s(&sk["key"])
                    );
                }
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                let p = &c[probe];
                if p.is_badvalue() {
                    continue;
                }
                let port = &p["httpGet"]["port"];
                if !port.is_badvalue() {
                    let n = container_port(c, port).unwrap_or_else(|| {
                        panic!("{}: {cname} {probe} asks an undeclared port", d.what())
                    });
                    // Our services are ready on their side port once they hold their policies.
                    if let Some(admin) = flag(&command(c), "--admin") {
                        assert!(
                            admin.ends_with(&format!(":{n}")),
                            "{}: {probe} on {n}, --admin is {admin}",
                            d.what()
                        );
                        assert_eq!(s(&p["httpGet"]["path"]), "/readyz", "{}", d.what());
                    }
                } else {
                    assert!(
                        !p["exec"]["command"].is_badvalue(),
                        "{}: {probe} asks nothing",
                        d.what()
                    );
                }
            }
            assert!(
                !c["readinessProbe"].is_badvalue(),
                "{}: {cname} has no readiness probe",
                d.what()
            );
        }
    }
    // Services, PDBs and HPAs point at Deployments and ports that exist.
    for d in &docs {
        match d.kind() {
            "Service" => {
                let sel = labels(&d.y["spec"]["selector"]);
                let targets: Vec<&&Doc> = deps
                    .iter()
                    .filter(|p| {
                        selects(
                            &sel,
                            &labels(&p.y["spec"]["template"]["metadata"]["labels"]),
                        )
                    })
                    .collect();
                assert!(!targets.is_empty(), "{}: selects no pods", d.what());
                for port in list(&d.y["spec"]["ports"]) {
                    for t in &targets {
                        let found = list(&t.y["spec"]["template"]["spec"]["containers"])
                            .iter()
                            .any(|c| container_port(c, &port["targetPort"]).is_some());
                        assert!(
                            found,
                            "{}: targetPort {:?} is not a port of {}",
                            d.what(),
                            port["targetPort"],
                            t.what()
                        );
                    }
                }
            }
            "PodDisruptionBudget" => {
                let sel = labels(&d.y["spec"]["selector"]["matchLabels"]);
                assert!(
                    deps.iter().any(|p| selects(
                        &sel,
                        &labels(&p.y["spec"]["template"]["metadata"]["labels"])
                    )),
                    "{}: selects no pods",
                    d.what()
                );
            }
            "HorizontalPodAutoscaler" => {
                let target = &d.y["spec"]["scaleTargetRef"];
                assert_eq!(s(&target["kind"]), "Deployment", "{}", d.what());
                assert!(
                    deps.iter().any(|p| p.name() == s(&target["name"])),
                    "{}: no such Deployment",
                    d.what()
                );
            }
            _ => {}
        }
    }
}

/// The Secrets the operator creates, from the README's `kubectl create secret generic NAME
/// --from-…=KEY…` commands (never committed), with their keys; `--from-file=DIR` stands for the
/// files `xds-server certs` writes.
fn operator_secrets() -> BTreeMap<String, BTreeSet<String>> {
    let readme = read("README.md");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in readme.lines() {
        let Some(rest) = line.trim().strip_prefix("kubectl create secret generic ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let name = words.next().expect("secret name").to_string();
        let keys = out.entry(name).or_default();
        for w in words {
            if let Some(kv) = w.strip_prefix("--from-literal=") {
                keys.insert(kv.split('=').next().unwrap_or_default().to_string());
            } else if w.starts_with("--from-file=") {
                keys.insert("*".into());
            }
        }
    }
    assert!(
        !out.is_empty(),
        "README.md creates no Secret for deploy/kubernetes"
    );
    out
}

#[test]
fn every_container_is_unprivileged_and_requests_resources() {
    for d in deployments(&docs()) {
        let pod = &d.y["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            Yaml::Boolean(true),
            "{}",
            d.what()
        );
        let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap_or(0);
        assert!(uid > 0, "{}: runs as uid {uid}", d.what());
        assert_eq!(
            pod["automountServiceAccountToken"],
            Yaml::Boolean(false),
            "{}: needs no API token",
            d.what()
        );
        for c in list(&pod["containers"]) {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["readOnlyRootFilesystem"],
                Yaml::Boolean(true),
                "{}",
                d.what()
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"],
                Yaml::Boolean(false),
                "{}",
                d.what()
            );
            assert!(
                list(&sc["capabilities"]["drop"])
                    .iter()
                    .any(|x| s(x) == "ALL"),
                "{}: keeps capabilities",
                d.what()
            );
            let req = &c["resources"]["requests"];
            assert!(
                req["cpu"].as_str().is_some() && req["memory"].as_str().is_some(),
                "{}: no resource requests",
                d.what()
            );
        }
    }
}

#[test]
fn gateway_config_is_the_compose_one_and_names_services_here() {
    let docs = docs();
    let cm = docs
        .iter()
        .find(|d| d.kind() == "ConfigMap" && d.name() == "gateway-config")
        .expect("ConfigMap gateway-config");
    assert_eq!(
        s(&cm.y["data"]["gateway.yaml"]),
        read("examples/gateway.docker.yaml"),
        "gateway.yaml is not examples/gateway.docker.yaml"
    );
    assert_eq!(
        s(&cm.y["data"]["demo-api-keys.yaml"]),
        read("examples/demo-api-keys.yaml")
    );

    let services: BTreeMap<&str, BTreeSet<i64>> = docs
        .iter()
        .filter(|d| d.kind() == "Service")
        .map(|d| {
            (
                d.name(),
                list(&d.y["spec"]["ports"])
                    .iter()
                    .filter_map(|p| p["port"].as_i64())
                    .collect(),
            )
        })
        .collect();
    let names = |host: &str, port: u16, what: &str| {
        let ports = services
            .get(host)
            .unwrap_or_else(|| panic!("{what}: {host} is not a Service"));
        assert!(
            ports.contains(&i64::from(port)),
            "{what}: Service {host} has no port {port}"
        );
    };
    // Decoded without reading the files it names: the certificates exist only in the Secret.
    let config: Config = config::parse(
        &read("examples/gateway.docker.yaml"),
        &repo_root().join("examples/gateway.docker.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (name, svc) in &config.services {
        for e in &svc.endpoints {
            names(&e.host, e.port, &format!("services.{name}"));
        }
    }
    if let Some(a) = &config.auth {
        names(
            &a.service.address.host,
            a.service.address.port,
            "auth.service",
        );
    }
    if let Some(r) = &config.rate_limits {
        names(
            &r.service.address.host,
            r.service.address.port,
            "rate_limits.service",
        );
    }
}

#[test]
fn envoy_bootstrap_is_generated_and_names_the_xds_service() {
    let docs = docs();
    let cm = docs
        .iter()
        .find(|d| d.kind() == "ConfigMap" && d.name() == "envoy-bootstrap")
        .expect("ConfigMap envoy-bootstrap");
    let args = [
        "bootstrap",
        "--gateway",
        "edge",
        "--node-id",
        "edge",
        "--xds",
        "xds-server:18000",
        "--admin-address",
        "127.0.0.1",
        "--admin-port",
        "9901",
        "--xds-ca",
        "/tls/ca.pem",
        "--xds-tls-cert",
        "/tls/edge.pem",
        "--xds-tls-key",
        "/tls/edge.key",
    ];
    let out = Command::new(xds_server_bin())
        .args(args)
        .output()
        .expect("xds-server bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s(&cm.y["data"]["bootstrap.json"]).trim(),
        String::from_utf8_lossy(&out.stdout).trim(),
        "envoy-bootstrap is stale: regenerate it with `xds-server {}`",
        args.join(" ")
    );
    // Envoy's admin stays on the pod's loopback; the xds address is the xds-server Service.
    let xds = docs
        .iter()
        .find(|d| d.kind() == "Service" && d.name() == "xds-server")
        .expect("Service xds-server");
    assert!(list(&xds.y["spec"]["ports"])
        .iter()
        .any(|p| p["port"].as_i64() == Some(18000)));
    let envoy = deployments(&docs)
        .into_iter()
        .find(|d| {
            list(&d.y["spec"]["template"]["spec"]["containers"])
                .iter()
                .any(|c| s(&c["image"]).starts_with("envoyproxy/envoy:"))
        })
        .expect("an Envoy Deployment");
    let c = &list(&envoy.y["spec"]["template"]["spec"]["containers"])[0];
    let cmd = command(c);
    assert_eq!(flag(&cmd, "-c"), Some("/etc/envoy/bootstrap.json"));
    // One node id per pod, so /status tells the replicas apart.
    assert_eq!(flag(&cmd, "--service-node"), Some("$(POD_NAME)"));
    assert!(
        list(&c["ports"])
            .iter()
            .all(|p| p["containerPort"].as_i64() != Some(9901)),
        "admin port declared"
    );
}

#[test]
fn images_are_the_ones_compose_runs_each_program_with() {
    let compose = &YamlLoader::load_from_str(&read("docker-compose.yml")).expect("compose")[0];
    // program (first word of the command, or the image's own for Redis) -> image in compose
    let mut by_program: BTreeMap<String, String> = BTreeMap::new();
    for (_, svc) in compose["services"].as_hash().expect("services") {
        let image = s(&svc["image"]).to_string();
        let program = list(&svc["command"])
            .first()
            .map(s)
            .unwrap_or(image.split(':').next().unwrap_or_default())
            .to_string();
        by_program.insert(program, image);
    }
    let docs = docs();
    let mut programs = BTreeSet::new();
    for d in deployments(&docs) {
        for c in list(&d.y["spec"]["template"]["spec"]["containers"]) {
            let image = s(&c["image"]);
            let program = command(c)
                .first()
                .copied()
                .unwrap_or(image.split(':').next().unwrap_or_default())
                .to_string();
            assert_eq!(
                by_program.get(&program).map(String::as_str),
                Some(image),
                "{}: {program} runs another image in compose",
                d.what()
            );
            programs.insert(program);
        }
    }
    for p in [
        "xds-server",
        "authz-service",
        "ratelimit-service",
        "envoy",
        "redis",
    ] {
        assert!(programs.contains(p), "no Deployment runs {p}");
    }
    // Autoscaled and protected from voluntary disruption: Envoy and the policy services.
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        let named: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d.kind() == kind)
            .map(Doc::name)
            .collect();
        for want in ["edge", "authz-service", "ratelimit-service"] {
            assert!(named.contains(want), "no {kind} for {want}");
        }
    }
}

/// Every manifest against the Kubernetes API schemas (strict: an unknown field is an error),
/// with the validator scripts/ensure-kubernetes-validate installs into the project's .venv.
#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let ensure = Command::new(repo_root().join("scripts/ensure-kubernetes-validate"))
        .output()
        .expect("run scripts/ensure-kubernetes-validate");
    assert!(
        ensure.status.success(),
        "scripts/ensure-kubernetes-validate: {}",
        String::from_utf8_lossy(&ensure.stderr)
    );
    let bin = String::from_utf8_lossy(&ensure.stdout).trim().to_string();
    let files: BTreeSet<String> = docs().into_iter().map(|d| d.file).collect();
    assert!(files.len() >= 5, "{files:?}");
    let out = Command::new(&bin)
        .args(["--strict", "--quiet"])
        .args(files.iter().map(|f| repo_root().join(DIR).join(f)))
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator refuses what it should: a manifest with a wrongly typed field.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        read(&format!("{DIR}/redis.yaml")).replacen("replicas: 1", "replicas: one", 1),
    )
    .expect("write");
    let out = Command::new(&bin)
        .args(["--strict", "--quiet"])
        .arg(&bad)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        !out.status.success(),
        "kubernetes-validate accepts `replicas: one`"
    );
}
