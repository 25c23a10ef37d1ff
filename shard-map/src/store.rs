//! Versioned shard map snapshots and where they are kept: the only I/O of this crate, behind
//! [`ShardMapStore`].
//!
//! [`FileStore`] keeps the current map in `{dir}/shard_map.json` and every saved version in
//! `{dir}/history/v{N}.json`, each written atomically (temporary file in the same directory,
//! fsync, rename, fsync of the directory), so a crash leaves either the old or the new file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::shardmap::ShardMap;

/// A shard map with the version it was saved as. Versions only grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionedShardMap {
    pub version: u64,
    pub map: ShardMap,
}

/// Why a store could not load or save.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shard map store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shard map store {path}: not a valid shard map file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot save shard map version {attempted}: the store already holds version {current}; versions must increase")]
    StaleVersion { current: u64, attempted: u64 },
}

/// Where shard map versions are kept.
pub trait ShardMapStore: Send + Sync {
    /// The current version, or `None` if nothing was saved yet.
    fn load(&self) -> Result<Option<VersionedShardMap>, StoreError>;
    /// Makes `map` the current version; its version must be above the current one.
    fn save(&self, map: &VersionedShardMap) -> Result<(), StoreError>;
    /// Versions kept in the history, ascending.
    fn versions(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.load()?.map(|m| vec![m.version]).unwrap_or_default())
    }
    /// A version from the history.
    fn load_version(&self, version: u64) -> Result<Option<VersionedShardMap>, StoreError> {
        Ok(self.load()?.filter(|m| m.version == version))
    }
}

/// JSON files in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore { dir: dir.into() }
    }

    /// The file holding the current version.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join("shard_map.json")
    }

    fn history_dir(&self) -> PathBuf {
        self.dir.join("history")
    }

    fn version_path(&self, version: u64) -> PathBuf {
        self.history_dir().join(format!("v{version}.json"))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json(path: &Path) -> Result<Option<VersionedShardMap>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StoreError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// then fsync of the directory so the rename itself is durable.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl ShardMapStore for FileStore {
    fn load(&self) -> Result<Option<VersionedShardMap>, StoreError> {
        read_json(&self.current_path())
    }

    fn save(&self, map: &VersionedShardMap) -> Result<(), StoreError> {
        if let Some(current) = self.load()? {
            if map.version <= current.version {
                return Err(StoreError::StaleVersion {
                    current: current.version,
                    attempted: map.version,
                });
            }
        }
        let mut json = serde_json::to_vec_pretty(map).expect("a shard map always serialises");
        json.push(b'\n');
        // History first: a crash in between leaves a history entry ahead of the current file,
        // never a current version missing from the history.
        write_atomically(&self.version_path(map.version), &json)?;
        write_atomically(&self.current_path(), &json)
    }

    fn versions(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.history_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let version = name.to_str().and_then(|n| {
                n.strip_prefix('v')?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            });
            versions.extend(version);
        }
        versions.sort_unstable();
        Ok(versions)
    }

    fn load_version(&self, version: u64) -> Result<Option<VersionedShardMap>, StoreError> {
        read_json(&self.version_path(version))
    }
}

/// A store in memory, for tests and single-process setups.
#[derive(Debug, Default)]
pub struct MemoryStore {
    versions: Mutex<Vec<VersionedShardMap>>,
}

impl ShardMapStore for MemoryStore {
    fn load(&self) -> Result<Option<VersionedShardMap>, StoreError> {
        Ok(self.lock().last().cloned())
    }

    fn save(&self, map: &VersionedShardMap) -> Result<(), StoreError> {
        let mut versions = self.lock();
        if let Some(current) = versions.last() {
            if map.version <= current.version {
                return Err(StoreError::StaleVersion {
                    current: current.version,
                    attempted: map.version,
                });
            }
        }
        versions.push(map.clone());
        Ok(())
    }

    fn versions(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.lock().iter().map(|m| m.version).collect())
    }

    fn load_version(&self, version: u64) -> Result<Option<VersionedShardMap>, StoreError> {
        Ok(self.lock().iter().find(|m| m.version == version).cloned())
    }
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VersionedShardMap>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
