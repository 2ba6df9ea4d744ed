//! `HttpClient`: sends requests to an Envoy listener and returns status, headers and JSON body.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use reqwest::Method;
use serde_json::Value;

/// Per-request timeout; far above anything a healthy local request takes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one gateway listener (`http://127.0.0.1:<port>` or `https://<name>:<port>`).
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base: String,
}

impl HttpClient {
    /// Plain HTTP to 127.0.0.1:`port`.
    pub fn new(port: u16) -> HttpClient {
        let client = builder().build().expect("reqwest client");
        HttpClient {
            client,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Plain HTTP to 127.0.0.1:`port` from the source address `source` (any of 127.0.0.0/8
    /// works on Linux without setup), so one test can be many clients to Envoy.
    pub fn from_source(port: u16, source: std::net::IpAddr) -> HttpClient {
        let client = builder()
            .local_address(source)
            .build()
            .expect("reqwest client");
        HttpClient {
            client,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// HTTPS to `server_name`:`port`, resolved to 127.0.0.1, trusting only `ca_pem`.
    /// Responses record the server's certificate ([`Reply::peer_certificate`]).
    pub fn https(server_name: &str, port: u16, ca_pem: &str) -> HttpClient {
        Self::https_as(server_name, port, ca_pem, None)
    }

    /// [`Self::https`], presenting the client certificate `identity_pem` (its PEM chain and
    /// key in one text) when given.
    pub fn https_as(
        server_name: &str,
        port: u16,
        ca_pem: &str,
        identity_pem: Option<&str>,
    ) -> HttpClient {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA certificate PEM");
        let mut b = builder();
        if let Some(id) = identity_pem {
            b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).expect("client identity"));
        }
        let client = b
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .tls_info(true)
            .resolve(server_name, SocketAddr::from(([127, 0, 0, 1], port)))
            // A fresh TLS handshake per request, so a replaced certificate is seen at once.
            .pool_max_idle_per_host(0)
            .build()
            .expect("reqwest TLS client");
        HttpClient {
            client,
            base: format!("https://{server_name}:{port}"),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Starts a request; `path_and_query` begins with `/`.
    pub fn request(&self, method: Method, path_and_query: &str) -> Req {
        Req {
            inner: self
                .client
                .request(method, format!("{}{path_and_query}", self.base)),
        }
    }

    pub fn get(&self, path_and_query: &str) -> Req {
        self.request(Method::GET, path_and_query)
    }

    pub fn post(&self, path_and_query: &str) -> Req {
        self.request(Method::POST, path_and_query)
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
}

/// A request being built.
pub struct Req {
    inner: reqwest::RequestBuilder,
}

impl Req {
    /// Sets the `Host` header (what Envoy matches virtual hosts and `hosts:` on).
    pub fn host(self, host: &str) -> Req {
        self.header(HOST.as_str(), host)
    }

    /// Adds a header; call twice with one name to send it twice.
    pub fn header(self, name: &str, value: &str) -> Req {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_str(value).expect("header value");
        Req {
            inner: self.inner.header(name, value),
        }
    }

    pub fn body(self, body: impl Into<String>) -> Req {
        Req {
            inner: self.inner.body(body.into()),
        }
    }

    pub fn timeout(self, timeout: Duration) -> Req {
        Req {
            inner: self.inner.timeout(timeout),
        }
    }

    /// Sends the request; transport errors (refused, reset, timeout) are `Err`.
    pub async fn send(self) -> reqwest::Result<Reply> {
        let resp = self.inner.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let peer_certificate = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(<[u8]>::to_vec);
        let body = resp.text().await?;
        let json = serde_json::from_str(&body).ok();
        Ok(Reply {
            status,
            headers,
            body,
            json,
            peer_certificate,
        })
    }

    /// Sends the request and panics on a transport error.
    pub async fn ok(self) -> Reply {
        self.send()
            .await
            .expect("request failed at the transport level")
    }
}

/// A received response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The body parsed as JSON, if it is JSON.
    pub json: Option<Value>,
    /// DER of the server's leaf certificate (HTTPS clients only).
    pub peer_certificate: Option<Vec<u8>>,
}

impl Reply {
    /// A response header as text (the first, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON body; panics with the raw body when it is not JSON.
    pub fn json(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "expected a JSON body, got status {} body {:?}",
                self.status, self.body
            )
        })
    }

    /// For echo-upstream answers: which upstream answered.
    pub fn upstream(&self) -> Option<&str> {
        self.json.as_ref()?.get("upstream")?.as_str()
    }

    /// For echo-upstream answers: a request header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.json.as_ref()?.get("headers")?.get(name)?.as_str()
    }

    /// For echo-upstream answers: the path the upstream received.
    pub fn upstream_path(&self) -> Option<&str> {
        self.json.as_ref()?.get("path")?.as_str()
    }

    /// For echo-upstream answers: the query string the upstream received (without `?`).
    pub fn upstream_query(&self) -> Option<&str> {
        self.json.as_ref()?.get("query")?.as_str()
    }
}
