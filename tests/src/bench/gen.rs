//! Generated `gateway.yaml` files of a chosen size for the benchmarks, valid under spec §2.
//!
//! Routes are spread round-robin over the services and vary in shape (prefix, exact path,
//! methods, rewrite, timeout, retries, header changes) so translation and encoding see a realistic
//! mix instead of one repeated route. Every route says `auth: none`: the spec makes a route
//! without an `auth` key an error, and the bench has no auth or rate-limit services to point at.

use std::fmt::Write as _;

/// The one gateway every generated config defines (the simulated Envoys' `node.cluster`).
pub const GATEWAY: &str = "edge";

/// The shape of one generated config.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Generated routes `r<i>`, spread over the services.
    pub routes: usize,
    /// Services `svc-<j>`; at least 1.
    pub services: usize,
    /// The gateway's HTTP listener port.
    pub port: u16,
    /// The single endpoint of every service (`host:port`).
    pub endpoint: String,
    /// Extra services `extra-<j>`, each used by one extra route `/extra-<j>` (so each one adds a
    /// cluster, its endpoints and a route).
    pub extra_services: usize,
    /// Extra exact-path routes `(name, path)` to `svc-0`, after the generated ones.
    pub extra_routes: Vec<(String, String)>,
}

impl Shape {
    /// `routes` routes over `routes / 10` services (at least one), all pointing at `endpoint`.
    pub fn new(routes: usize, port: u16, endpoint: &str) -> Shape {
        Shape {
            routes,
            services: (routes / 10).max(1),
            port,
            endpoint: endpoint.to_string(),
            extra_services: 0,
            extra_routes: Vec::new(),
        }
    }

    /// Adds one exact-path route named `name` for `path`.
    pub fn with_route(mut self, name: &str, path: &str) -> Shape {
        self.extra_routes.push((name.to_string(), path.to_string()));
        self
    }

    /// Adds one service (and a route that uses it, or it would not become a cluster).
    pub fn with_service(mut self) -> Shape {
        self.extra_services += 1;
        self
    }

    /// Routes in the rendered file, extras included.
    pub fn total_routes(&self) -> usize {
        self.routes + 1 + self.extra_routes.len() + self.extra_services
    }

    pub fn yaml(&self) -> String {
        let services = self.services.max(1);
        // ~150 bytes per route; reserving avoids a dozen reallocations at 10,000 routes.
        let mut y = String::with_capacity(200 + services * 60 + self.total_routes() * 160);
        y.push_str("version: 1\nservices:\n");
        for s in 0..services {
            let _ = writeln!(y, "  svc-{s}: {{ endpoints: [{}] }}", self.endpoint);
        }
        for e in 0..self.extra_services {
            let _ = writeln!(y, "  extra-{e}: {{ endpoints: [{}] }}", self.endpoint);
        }
        let _ = write!(
            y,
            "gateways:\n  {GATEWAY}:\n    listeners:\n      - {{ name: http, port: {} }}\n    access_log: off\n    routes:\n",
            self.port
        );
        y.push_str(
            "      - name: health\n        match: { path: /health }\n        respond: { status: 200, json: { status: ok } }\n        auth: none\n",
        );
        for i in 0..self.routes {
            let s = i % services;
            let _ = writeln!(y, "      - name: r{i}");
            match i % 4 {
                0 => {
                    let _ = writeln!(y, "        match: {{ prefix: /svc-{s}/r{i} }}");
                }
                1 => {
                    let _ = writeln!(
                        y,
                        "        match: {{ prefix: /svc-{s}/r{i}, methods: [GET, POST] }}\n        timeout: 5s"
                    );
                }
                2 => {
                    let _ = writeln!(
                        y,
                        "        match: {{ prefix: /api/svc-{s}/r{i} }}\n        rewrite: {{ prefix: /r{i} }}"
                    );
                }
                _ => {
                    let _ = writeln!(
                        y,
                        "        match: {{ path: /svc-{s}/r{i}/item }}\n        retries: {{ attempts: 2 }}\n        request_headers: {{ set: {{ x-route: r{i} }} }}"
                    );
                }
            }
            let _ = writeln!(y, "        service: svc-{s}\n        auth: none");
        }
        for (name, path) in &self.extra_routes {
            let _ = writeln!(
                y,
                "      - name: {name}\n        match: {{ path: {path} }}\n        service: svc-0\n        auth: none"
            );
        }
        for e in 0..self.extra_services {
            let _ = writeln!(
                y,
                "      - name: extra-{e}\n        match: {{ prefix: /extra-{e} }}\n        service: extra-{e}\n        auth: none"
            );
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_parse() {
        for shape in [
            Shape::new(10, 8080, "127.0.0.1:1"),
            Shape::new(1000, 8080, "127.0.0.1:1")
                .with_route("bench-0", "/bench-0")
                .with_service(),
        ] {
            let cfg = config::parse(&shape.yaml(), std::path::Path::new("/g.yaml"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.gateways[GATEWAY].routes.len(), shape.total_routes());
            assert_eq!(cfg.services.len(), shape.services + shape.extra_services);
        }
    }
}
