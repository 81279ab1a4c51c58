//! The store and queue conformance suites against the in-memory backends.
#![cfg(feature = "testkit")]

use flotilla::memory::{MemoryQueue, MemoryStore};

#[tokio::test]
async fn memory_store_meets_the_store_contract() {
    flotilla::testkit::store_suite(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_queue_meets_the_queue_contract() {
    flotilla::testkit::queue_suite(&MemoryQueue::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backends_meet_the_contracts_on_several_threads() {
    let store = MemoryStore::new();
    let queue = MemoryQueue::new();
    tokio::join!(
        flotilla::testkit::store_suite(&store),
        flotilla::testkit::queue_suite(&queue)
    );
}
