//! `dsm cache ls|verify|prune|size`.
//!
//! These are thin wrappers over the library's cache store (`dsm::cache::CacheStore`: list, verify,
//! prune, size). That store is not in this build of the library yet, so each subcommand is parsed
//! and validated and then reports, as a local failure (exit 1), that it is not available. This
//! module must never read or change cache files itself: the on-disk format belongs to the library.

use crate::args::{CacheArgs, CacheCommand};
use crate::printer::Printer;

/// Runs a `dsm cache` subcommand.
pub fn run(command: &CacheCommand, _printer: Printer) -> anyhow::Result<()> {
    let (name, args): (&str, &CacheArgs) = match command {
        CacheCommand::Ls(a) => ("ls", a),
        CacheCommand::Verify(a) => ("verify", a),
        CacheCommand::Prune { common, .. } => ("prune", common),
        CacheCommand::Size(a) => ("size", a),
    };
    let dir = args.cache_dir.as_ref().map_or_else(
        || "the default cache directory".to_owned(),
        |d| d.display().to_string(),
    );
    anyhow::bail!(
        "dsm cache {name} ({dir}) is not available in this build: the library's cache store \
         (dsm::cache::CacheStore) is not included yet"
    )
}
