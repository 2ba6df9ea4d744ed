//! `auth` and each route's `auth`/`require` → the `AuthPolicy` authz-service enforces.

use proto::authz::AuthPolicy;

use super::TranslateError;
use crate::config;

/// The policy for a loaded config (key files are read by the loader and shipped inline).
pub fn policy(_loaded: &config::Loaded) -> Result<AuthPolicy, TranslateError> {
    Ok(AuthPolicy::default())
}
