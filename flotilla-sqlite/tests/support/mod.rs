//! Shared test support: a store on a fresh file in a temp dir.
#![allow(dead_code)]

use flotilla_sqlite::{SqliteOptions, SqliteStore};

/// A temp dir holding one database file; removed on drop.
pub struct TempDb {
    pub dir: tempfile::TempDir,
}

impl TempDb {
    pub fn new() -> TempDb {
        TempDb {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("flotilla.db")
    }

    /// Opens (or reopens) the file with the default options.
    pub async fn open(&self) -> SqliteStore {
        SqliteStore::open(self.path(), SqliteOptions::default())
            .await
            .expect("open the database")
    }
}
