//! SCAFFOLD — replaced by the real LocalLogSource.
use std::sync::Arc;

use async_trait::async_trait;

use super::LocalEngine;
use crate::error::{Error, Result};
use crate::logs::{LogChunk, LogSource};
use crate::model::Run;

/// Reads logs captured by the local engine.
#[derive(Debug)]
pub struct LocalLogSource {
    engine: Arc<LocalEngine>,
}

impl LocalLogSource {
    /// A source for `engine`'s runs.
    pub fn new(engine: Arc<LocalEngine>) -> Self {
        LocalLogSource { engine }
    }
}

#[async_trait]
impl LogSource for LocalLogSource {
    async fn read(&self, _run: &Run, _cursor: Option<&str>, _max: usize) -> Result<LogChunk> {
        let _ = &self.engine;
        Err(Error::unsupported("scaffold"))
    }
}
