//! Paging through a store: every matching run, a page at a time.
//!
//! Workers that act on "all runs in a status" must see all of them, not the
//! first page: [`run_pages`] follows the store's keyset cursor until the
//! last page, so runs leaving the set while it is walked (requeued, stopped)
//! neither stall it nor make it skip others.

use futures::stream::{self, BoxStream, StreamExt};

use crate::error::Result;
use crate::model::Run;
use crate::query::RunQuery;
use crate::store::Store;

/// The runs matching `query` (its `limit` is the page size, at least 1), as
/// a stream of non-empty pages; a store error ends the stream after it is
/// yielded.
pub fn run_pages(store: &dyn Store, mut query: RunQuery) -> BoxStream<'_, Result<Vec<Run>>> {
    query.limit = query.limit.max(1);
    query.offset = 0;
    // Walking every page needs no count of the matches.
    query.skip_total = true;
    stream::unfold(Some(query), move |state| async move {
        let query = state?;
        match store.list_runs(&query).await {
            Ok(page) if page.items.is_empty() => None,
            Ok(page) => {
                let next = match page.next_cursor {
                    Some(c) if page.items.len() >= query.limit => {
                        let mut q = query;
                        q.cursor = Some(c);
                        Some(q)
                    }
                    _ => None,
                };
                Some((Ok(page.items), next))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::model::{NewDefinition, RunEvent, RunStatus};

    #[tokio::test]
    async fn every_run_is_seen_once_across_pages() {
        let store = MemoryStore::new();
        let def = NewDefinition::new("paged", "alpine").into_definition();
        for i in 0..2_503 {
            let mut run = Run::queued(&def, "default", "local", "me");
            if i % 2 == 1 {
                run.status = RunStatus::Stopped;
            }
            let event = RunEvent::created(&run);
            store.create_run(&run, &event).await.expect("create");
        }
        let query = RunQuery::all(100).with_statuses(&[RunStatus::Queued]);
        let mut seen = Vec::new();
        let mut pages = run_pages(&store, query);
        while let Some(page) = pages.next().await {
            seen.extend(page.expect("page").into_iter().map(|r| r.run_id));
        }
        let unique: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(seen.len(), 1_252);
        assert_eq!(unique.len(), 1_252);
    }
}
