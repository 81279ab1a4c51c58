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

/// Settings of a Google Cloud Storage store beyond its URL.
#[cfg(feature = "gcs")]
#[derive(Debug, Clone, Default)]
pub struct GcsOptions {
    /// Base URL of the JSON and XML APIs (an emulator in tests); Google's
    /// when absent.
    pub endpoint: Option<String>,
    /// A service account key file; else from the environment
    /// (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, the
    /// instance's metadata server).
    pub service_account_path: Option<String>,
}

/// Settings of an Azure Blob Storage store beyond its URL.
#[cfg(feature = "azure")]
#[derive(Debug, Clone, Default)]
pub struct AzureOptions {
    /// Storage account; else `AZURE_STORAGE_ACCOUNT_NAME`.
    pub account: Option<String>,
    /// The account's access key; else from the environment
    /// (`AZURE_STORAGE_ACCOUNT_KEY`, a managed identity, ...).
    pub access_key: Option<String>,
    /// Blob endpoint including the account (Azurite in tests:
    /// `http://127.0.0.1:10000/devstoreaccount1`); Azure's when absent.
    pub endpoint: Option<String>,
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
        let (bucket, prefix) = bucket_and_prefix(url, "s3")?;
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
        Ok(Self::in_bucket("s3", bucket, prefix, Arc::new(store)))
    }

    /// A store in the Google Cloud Storage bucket of `url` (`gs://bucket`
    /// or `gs://bucket/prefix`).
    #[cfg(feature = "gcs")]
    pub fn gcs(url: &str, options: GcsOptions) -> Result<Self> {
        use object_store::gcp::GoogleCloudStorageBuilder;
        let (bucket, prefix) = bucket_and_prefix(url, "gs")?;
        let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
        if let Some(path) = &options.service_account_path {
            b = b.with_service_account_path(path);
        }
        if let Some(endpoint) = &options.endpoint {
            b = b.with_base_url(endpoint);
        }
        let store = b
            .build()
            .map_err(|e| Error::invalid(format!("artifacts: {url}: {e}")).with_source(e))?;
        Ok(Self::in_bucket("gs", bucket, prefix, Arc::new(store)))
    }

    /// A store in the Azure Blob Storage container of `url`
    /// (`az://container` or `az://container/prefix`).
    #[cfg(feature = "azure")]
    pub fn azure(url: &str, options: AzureOptions) -> Result<Self> {
        use object_store::azure::MicrosoftAzureBuilder;
        let (container, prefix) = bucket_and_prefix(url, "az")?;
        let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
        if let Some(account) = &options.account {
            b = b.with_account(account);
        }
        if let Some(key) = &options.access_key {
            b = b.with_access_key(key);
        }
        if let Some(endpoint) = &options.endpoint {
            b = b
                .with_endpoint(endpoint.clone())
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = b
            .build()
            .map_err(|e| Error::invalid(format!("artifacts: {url}: {e}")).with_source(e))?;
        Ok(Self::in_bucket("az", container, prefix, Arc::new(store)))
    }

    /// A bucket store's value: its URL is `<scheme>://<bucket>[/<prefix>]`.
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn in_bucket(
        scheme: &str,
        bucket: &str,
        prefix: ObjectPath,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        let url = match prefix.as_ref() {
            "" => format!("{scheme}://{bucket}"),
            p => format!("{scheme}://{bucket}/{p}"),
        };
        ArtifactStore { url, store, prefix }
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

/// The bucket (or container) and the key prefix of
/// `<scheme>://bucket[/prefix]`.
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn bucket_and_prefix<'a>(url: &'a str, scheme: &str) -> Result<(&'a str, ObjectPath)> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| Error::invalid(format!("artifacts: {url:?} is not a {scheme}:// URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::invalid(format!(
            "artifacts: {url:?} names no bucket"
        )));
    }
    Ok((bucket, parse_key(prefix.trim_end_matches('/'))?))
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
