//! Counting AWS API calls by operation, with an SDK interceptor.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

#[derive(Debug, Default)]
struct Counts {
    /// Operations called (one per SDK call, retries not included).
    calls: BTreeMap<String, u64>,
    /// HTTP requests sent (retries included).
    attempts: BTreeMap<String, u64>,
}

/// An SDK interceptor counting calls per operation (`"ECS.RunTask"`, ...).
/// Cheap to clone; clones share the counts.
///
/// ```no_run
/// # async fn demo(sdk: aws_config::SdkConfig, settings: flotilla_ecs::EcsSettings) -> flotilla::Result<()> {
/// let counter = flotilla_ecs::ApiCallCounter::new();
/// let config = aws_sdk_ecs::config::Builder::from(&sdk).interceptor(counter.clone()).build();
/// let engine = flotilla_ecs::EcsEngine::from_client(aws_sdk_ecs::Client::from_conf(config), settings)?;
/// // ... use the engine ...
/// println!("RunTask calls: {}", counter.calls("ECS.RunTask"));
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ApiCallCounter {
    counts: Arc<Mutex<Counts>>,
}

impl ApiCallCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls of `operation` (`"<Service>.<Operation>"`, e.g. `"ECS.RunTask"`).
    pub fn calls(&self, operation: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.calls.get(operation).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// HTTP requests sent for `operation`, retries included.
    pub fn attempts(&self, operation: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.attempts.get(operation).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every operation's call count.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .map(|c| c.calls.clone())
            .unwrap_or_default()
    }

    /// Back to zero.
    pub fn reset(&self) {
        if let Ok(mut c) = self.counts.lock() {
            c.calls.clear();
            c.attempts.clear();
        }
    }

    fn bump(&self, cfg: &ConfigBag, attempts: bool) {
        let name = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".to_string());
        if let Ok(mut c) = self.counts.lock() {
            let map = if attempts {
                &mut c.attempts
            } else {
                &mut c.calls
            };
            *map.entry(name).or_insert(0) += 1;
        }
    }
}

impl Intercept for ApiCallCounter {
    fn name(&self) -> &'static str {
        "flotilla::ApiCallCounter"
    }

    // Once per call: the operation's metadata is in the bag from here on
    // (not yet in `read_before_execution`).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, false);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, true);
        Ok(())
    }
}
