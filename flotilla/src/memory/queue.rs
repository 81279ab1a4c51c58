//! SCAFFOLD — replaced by the real MemoryQueue.
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::queue::{Delivery, Message, Queue};

/// In-memory queue.
#[derive(Debug, Default)]
pub struct MemoryQueue {}

impl MemoryQueue {
    /// An empty queue set.
    pub fn new() -> Self {
        MemoryQueue {}
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, _q: &str, _m: &[Message]) -> Result<()> {
        Err(Error::unsupported("scaffold"))
    }
    async fn receive(
        &self,
        _q: &[String],
        _max: usize,
        _lease: Duration,
        _wait: Duration,
    ) -> Result<Vec<Delivery>> {
        Err(Error::unsupported("scaffold"))
    }
    async fn ack(&self, _d: &[Delivery]) -> Result<()> {
        Err(Error::unsupported("scaffold"))
    }
    async fn release(&self, _d: &Delivery, _delay: Duration) -> Result<()> {
        Err(Error::unsupported("scaffold"))
    }
    async fn depth(&self, _q: &str) -> Result<u64> {
        Err(Error::unsupported("scaffold"))
    }
}
