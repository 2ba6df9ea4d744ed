//! The `gateway.yaml` contract: loading, decoding with positions, and validation into the typed [`model`].

pub(crate) mod decode;
mod grammar;
pub mod model;
pub mod schema;
#[cfg(test)]
mod tests;
mod yaml;

/// The one `host:port` parser, for command lines as much as for gateway.yaml.
pub use grammar::host_port;
pub use model::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A validated config plus the bytes of every file it references (TLS certificates and keys,
/// upstream CAs, JWKS files, API-key files), read at load time so translation stays pure and a
/// changed file produces a new content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The `gateway.yaml` path as given.
    pub path: PathBuf,
    pub config: Config,
    /// Absolute path → contents, for every file the config references.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

/// One problem, located in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Says what was found and what was expected.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in one file, in source order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Decodes and validates `src` as if read from `file` (relative paths inside are resolved against
/// `file`'s directory). Does no I/O.
pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let base_dir = file.parent().unwrap_or_else(|| Path::new(""));
    parse_with_refs(src, file, base_dir).map(|(config, _)| config)
}

/// Reads `path`, parses it and reads every file it references.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let at_start = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message,
        }])
    };
    let bytes =
        std::fs::read(path).map_err(|e| at_start(format!("cannot read the config file: {e}")))?;
    let src = String::from_utf8(bytes)
        .map_err(|e| at_start(format!("the config file is not valid UTF-8: {e}")))?;
    // Referenced files are resolved against the config's directory as of now, so a later
    // change of working directory (or a relative `--config`) cannot change what they mean.
    let absolute = std::path::absolute(path)
        .map_err(|e| at_start(format!("cannot resolve the config file's path: {e}")))?;
    let base_dir = absolute.parent().unwrap_or_else(|| Path::new("/"));
    let (config, refs) = parse_with_refs(&src, path, base_dir)?;

    let mut files = BTreeMap::new();
    let mut errors = Vec::new();
    for r in refs {
        if files.contains_key(&r.path) {
            continue;
        }
        match std::fs::read(&r.path) {
            Ok(contents) => {
                files.insert(r.path, contents);
            }
            Err(e) => errors.push(ConfigError {
                file: path.to_path_buf(),
                line: r.pos.line,
                column: r.pos.column,
                message: format!("{}: cannot read {}: {e}", r.key, r.path.display()),
            }),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        config,
        files,
    })
}

/// [`parse`], also returning every referenced file and where it was named, so that [`load`] can
/// position a read error at the key that names the file.
fn parse_with_refs(
    src: &str,
    file: &Path,
    base_dir: &Path,
) -> Result<(Config, Vec<decode::FileRef>), ConfigErrors> {
    let error = |pos: yaml::Pos, message: String| ConfigError {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let root = yaml::parse(src).map_err(|e| ConfigErrors(vec![error(e.pos, e.message)]))?;
    decode::decode(root.as_ref(), base_dir).map_err(|mut problems| {
        // Source order reads best; the same node can be reached twice (through an alias), so
        // identical reports are merged.
        problems.sort_by_key(|(pos, _)| *pos);
        problems.dedup();
        ConfigErrors(
            problems
                .into_iter()
                .map(|(pos, message)| error(pos, message))
                .collect(),
        )
    })
}
