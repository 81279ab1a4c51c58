//! One configured artifact store: a base URL and the `object_store` behind it.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::error::{Error, Result};

/// A place artifacts live: a base URL (`file:///var/lib/flotilla/artifacts`,
/// `s3://bucket/prefix`) and the object store that reaches it. Only the
/// stores configured here are reachable: a URL from a user is resolved
/// against them, never dialled on its own (no user-chosen endpoints).
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

/// Settings of an S3 store beyond its URL.
#[cfg(feature = "s3")]
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint (an S3-compatible server, moto in tests); AWS's when absent.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent.
    pub region: Option<String>,
    /// Static credentials `(access key id, secret)`; else from the
    /// environment (`AWS_ACCESS_KEY_ID`, ...).
    pub credentials: Option<(String, String)>,
}

impl ArtifactStore {
    /// A store in the local directory `dir` (created if absent), with URL
    /// `file://<absolute dir>`.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::internal(format!("artifacts: cannot create {}: {e}", dir.display()))
                .with_source(e)
        })?;
        let abs = std::fs::canonicalize(dir).map_err(|e| {
            Error::internal(format!("artifacts: cannot resolve {}: {e}", dir.display()))
                .with_source(e)
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| Error::internal(format!("artifacts: {e}")).with_source(e))?;
        Ok(ArtifactStore {
            url: format!("file://{}", abs.display()),
            store: Arc::new(store),
            prefix: ObjectPath::default(),
        })
    }

    /// A store in the S3 bucket of `url` (`s3://bucket` or
    /// `s3://bucket/prefix`).
    #[cfg(feature = "s3")]
    pub fn s3(url: &str, options: S3Options) -> Result<Self> {
        use object_store::aws::AmazonS3Builder;
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::invalid(format!("artifacts: {url:?} is not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!(
                "artifacts: {url:?} names no bucket"
            )));
        }
        let prefix = parse_key(prefix.trim_end_matches('/'))?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(options.region.as_deref().unwrap_or("us-east-1"));
        if let Some(endpoint) = &options.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some((id, secret)) = &options.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b
            .build()
            .map_err(|e| Error::invalid(format!("artifacts: {url}: {e}")).with_source(e))?;
        let url = match prefix.as_ref() {
            "" => format!("s3://{bucket}"),
            p => format!("s3://{bucket}/{p}"),
        };
        Ok(ArtifactStore {
            url,
            store: Arc::new(store),
            prefix,
        })
    }

    /// The store's base URL (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of `key` in this store.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// The object path of `key` (a `/`-separated relative key), or
    /// `InvalidInput` when it is empty or has `.`/`..` segments.
    pub(super) fn path(&self, key: &str) -> Result<ObjectPath> {
        let key = parse_key(key)?;
        if key.as_ref().is_empty() {
            return Err(Error::invalid("artifact URL: names no object"));
        }
        Ok(self.prefix.parts().chain(key.parts()).collect())
    }

    /// The key of `url` when it lies inside this store.
    pub(super) fn key_of<'a>(&self, url: &'a str) -> Option<&'a str> {
        url.strip_prefix(self.url.as_str())?.strip_prefix('/')
    }

    pub(super) fn inner(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }
}

fn parse_key(key: &str) -> Result<ObjectPath> {
    if key.split('/').any(|p| p == "." || p == "..") {
        return Err(Error::invalid(format!(
            "artifact URL: {key:?} has '.' or '..' segments"
        )));
    }
    ObjectPath::parse(key)
        .map_err(|e| Error::invalid(format!("artifact URL: {key:?}: {e}")).with_source(e))
}
