//! How errors are classified across the gateway's processes, after pingora's `ErrorSource` and
//! `RetryType`: each error type says whose fault it is and whether trying again can help, so a
//! caller decides (log, count, retry, show on `/status`) without parsing a message.

use serde::Serialize;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSource {
    /// The user's gateway.yaml (or a file it names): fixing the file is the remedy.
    Config,
    /// An xDS client (an Envoy or a policy service) or its environment refused what it was sent.
    Client,
    /// A bug in the control plane: the input was valid and we produced something wrong.
    Internal,
}

/// Whether doing the same thing again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryType {
    /// The same input fails the same way: only a change (to the config, or to the client's
    /// environment followed by a reconnect) can help.
    AfterChange,
    /// A transient condition; the same input may succeed later.
    Later,
}

/// Implemented by every error type that crosses a crate boundary: load errors (`config`),
/// translation errors (`translate`), refusals by xDS clients (`ads`), refused rollouts.
pub trait Classify {
    fn source_kind(&self) -> ErrorSource;
    fn retry(&self) -> RetryType;
}
