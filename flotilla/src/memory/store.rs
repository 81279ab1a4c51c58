//! SCAFFOLD — replaced by the real MemoryStore.
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::{Cluster, Definition, Run, RunEvent};
use crate::query::{DefinitionQuery, Page, RunQuery};
use crate::store::{Expected, Store};

/// In-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {}
    }
}

fn nope<T>() -> Result<T> {
    Err(Error::unsupported("scaffold"))
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_definition(&self, _def: &Definition) -> Result<()> {
        nope()
    }
    async fn get_definition(&self, _id: &str) -> Result<Definition> {
        nope()
    }
    async fn get_definition_by_alias(&self, _alias: &str) -> Result<Definition> {
        nope()
    }
    async fn update_definition(&self, _def: &Definition) -> Result<()> {
        nope()
    }
    async fn delete_definition(&self, _id: &str) -> Result<()> {
        nope()
    }
    async fn list_definitions(&self, _q: &DefinitionQuery) -> Result<Page<Definition>> {
        nope()
    }
    async fn create_run(&self, _run: &Run, _event: &RunEvent) -> Result<()> {
        nope()
    }
    async fn get_run(&self, _id: &str) -> Result<Run> {
        nope()
    }
    async fn update_run(
        &self,
        _run: &Run,
        _expected: Expected,
        _event: Option<&RunEvent>,
    ) -> Result<Run> {
        nope()
    }
    async fn list_runs(&self, _q: &RunQuery) -> Result<Page<Run>> {
        nope()
    }
    async fn find_run_by_idempotence_key(&self, _key: &str) -> Result<Option<Run>> {
        nope()
    }
    async fn run_events(&self, _id: &str) -> Result<Vec<RunEvent>> {
        nope()
    }
    async fn list_groups(&self, _c: Option<&str>, _l: usize, _o: usize) -> Result<Page<String>> {
        nope()
    }
    async fn list_tags(&self, _c: Option<&str>, _l: usize, _o: usize) -> Result<Page<String>> {
        nope()
    }
    async fn put_cluster(&self, _c: &Cluster) -> Result<()> {
        nope()
    }
    async fn get_cluster(&self, _n: &str) -> Result<Cluster> {
        nope()
    }
    async fn delete_cluster(&self, _n: &str) -> Result<()> {
        nope()
    }
    async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        nope()
    }
    async fn try_lease(&self, _n: &str, _h: &str, _ttl: Duration) -> Result<bool> {
        nope()
    }
    async fn release_lease(&self, _n: &str, _h: &str) -> Result<()> {
        nope()
    }
}
