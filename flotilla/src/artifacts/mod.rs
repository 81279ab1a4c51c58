//! Run artifacts: an input zip in, an output zip out.
//!
//! A run may carry an input zip (inline on execute, stored here before the
//! run is queued, or an `input_url` inside a configured store); engines
//! unpack it where the job sees it (`/input`, `FLOTILLA_INPUT_DIR`) and,
//! after the job exits, zip what it left in `/output`
//! (`FLOTILLA_OUTPUT_DIR`) and upload it: the run's `output_url`.
//!
//! [`Artifacts`] holds the configured stores (the first is where flotilla
//! writes) and the [`ZipLimits`]. Keys:
//!
//! ```text
//! runs/<run_id>/input.zip                 an inline input, staged on execute
//! runs/<run_id>/attempt-<n>/output.zip    the output of attempt n
//! ```

mod attempt;
mod store;
pub mod zip;

pub use attempt::{INPUT_DIR, OUTPUT_DIR, absolute_data_dir, discard_staged};
pub use store::ArtifactStore;
#[cfg(feature = "azure")]
pub use store::AzureOptions;
#[cfg(feature = "gcs")]
pub use store::GcsOptions;
#[cfg(feature = "s3")]
pub use store::S3Options;
pub use zip::{Unpacked, ZipLimits};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::{ObjectStoreExt, PutPayload};

use crate::error::{Error, ErrorKind, Result};

/// The configured artifact stores and limits. Two are equal when they
/// reach the same store URLs with the same limits.
#[derive(Debug, Clone)]
pub struct Artifacts {
    stores: Vec<ArtifactStore>,
    limits: ZipLimits,
}

impl PartialEq for Artifacts {
    fn eq(&self, other: &Self) -> bool {
        self.limits == other.limits
            && self.stores.len() == other.stores.len()
            && self
                .stores
                .iter()
                .zip(&other.stores)
                .all(|(a, b)| a.url() == b.url())
    }
}

impl Eq for Artifacts {}

/// The object key of a run's staged input.
pub fn input_key(run_id: &str) -> String {
    format!("runs/{run_id}/input.zip")
}

/// The object key of one attempt's output.
pub fn output_key(run_id: &str, attempt: u32) -> String {
    format!("runs/{run_id}/attempt-{attempt}/output.zip")
}

fn store_error(what: &str, url: &str, e: object_store::Error) -> Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::InvalidPath { .. } => ErrorKind::InvalidInput,
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("{what} {url}: {e}")).with_source(e)
}

impl Artifacts {
    /// Artifacts written to `default`, with default limits.
    pub fn new(default: ArtifactStore) -> Self {
        Artifacts {
            stores: vec![default],
            limits: ZipLimits::default(),
        }
    }

    /// Artifacts in the local directory `dir` (see [`ArtifactStore::local`]).
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self::new(ArtifactStore::local(dir)?))
    }

    /// Adds a store `input_url`s may point into (read only).
    pub fn with_store(mut self, store: ArtifactStore) -> Self {
        self.stores.push(store);
        self
    }

    /// Sets the limits on zips.
    pub fn with_limits(mut self, limits: ZipLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits on zips.
    pub fn limits(&self) -> &ZipLimits {
        &self.limits
    }

    /// The store flotilla writes to.
    pub fn default_store(&self) -> &ArtifactStore {
        &self.stores[0]
    }

    /// The store holding `url` and the object's path, or `InvalidInput`
    /// naming `field` and the configured stores: nothing outside them is
    /// reachable.
    fn resolve(
        &self,
        field: &str,
        url: &str,
    ) -> Result<(&ArtifactStore, object_store::path::Path)> {
        for s in &self.stores {
            if let Some(key) = s.key_of(url) {
                return Ok((s, s.path(key)?));
            }
        }
        let known: Vec<&str> = self.stores.iter().map(ArtifactStore::url).collect();
        Err(Error::invalid(format!(
            "{field}: {url:?} is not inside a configured artifact store ({})",
            known.join(", ")
        )))
    }

    /// Checks that `url` lies inside a configured store (no request made).
    pub fn check_url(&self, url: &str) -> Result<()> {
        self.resolve("input_url", url).map(|_| ())
    }

    /// Writes `body` under `key` in the default store; its URL.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<String> {
        self.put_url(&self.default_store().url_of(key), body).await
    }

    /// Writes `body` at `url`, inside a configured store; its URL. A
    /// write the store refused for a passing reason (`Unavailable`:
    /// network, 5xx, throttling) is tried once more, so every upload —
    /// the engines' and the `flotilla artifacts push` helper's — is tried
    /// twice.
    pub async fn put_url(&self, url: &str, body: Vec<u8>) -> Result<String> {
        let (store, path) = self.resolve("url", url)?;
        let url = url.to_string();
        let payload = PutPayload::from(Bytes::from(body));
        let first = match store.inner().put(&path, payload.clone()).await {
            Ok(_) => return Ok(url),
            Err(e) => store_error("writing", &url, e),
        };
        if !first.is_retryable() {
            return Err(first);
        }
        tracing::warn!(url = %url, error = %first, "writing an artifact failed; trying once more");
        store
            .inner()
            .put(&path, payload)
            .await
            .map_err(|e| store_error("writing", &url, e))?;
        Ok(url)
    }

    /// The object at `url`, at most `max` bytes (larger is `InvalidInput`).
    pub async fn get(&self, url: &str, max: u64) -> Result<Bytes> {
        let (size, mut stream) = self.open(url).await?;
        if size > max {
            return Err(Error::invalid(format!(
                "{url}: {size} bytes, more than the limit of {max}"
            )));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }

    /// The size of the object at `url` and a stream of its bytes.
    pub async fn open(&self, url: &str) -> Result<(u64, BoxStream<'static, Result<Bytes>>)> {
        let (store, path) = self.resolve("url", url)?;
        let got = store
            .inner()
            .get(&path)
            .await
            .map_err(|e| store_error("reading", url, e))?;
        let size = got.meta.size;
        let url = url.to_string();
        let stream = got
            .into_stream()
            .map(move |c| c.map_err(|e| store_error("reading", &url, e)))
            .boxed();
        Ok((size, stream))
    }

    /// Checks an inline input zip against the limits and stores it as the
    /// input of `run_id`; its URL.
    pub async fn stage_input(&self, run_id: &str, zip: Vec<u8>) -> Result<String> {
        zip::check(&zip, &self.limits)?;
        self.put(&input_key(run_id), zip).await
    }

    /// Fetches the input zip at `url` and unpacks it into `dir` (checked:
    /// see [`zip::unpack`]).
    pub async fn fetch_input(&self, url: &str, dir: &std::path::Path) -> Result<Unpacked> {
        let body = self.get(url, self.limits.max_total_bytes).await?;
        let dir = dir.to_path_buf();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || zip::unpack(&body, &dir, &limits))
            .await
            .map_err(|e| Error::internal(format!("unpacking the input: {e}")))?
    }

    /// Zips `dir` (see [`zip::pack`]) and uploads it as the output of the
    /// attempt (tried twice by [`Artifacts::put_url`]); its URL.
    pub async fn upload_output(
        &self,
        dir: &std::path::Path,
        run_id: &str,
        attempt: u32,
    ) -> Result<String> {
        let owned = dir.to_path_buf();
        let limits = self.limits;
        let body = tokio::task::spawn_blocking(move || zip::pack(&owned, &limits))
            .await
            .map_err(|e| Error::internal(format!("packing the output: {e}")))??;
        self.put(&output_key(run_id, attempt), body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_input_url_outside_the_stores_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Artifacts::local(dir.path().join("art")).expect("store");
        let base = a.default_store().url().to_string();
        for url in [
            "http://169.254.169.254/latest/meta-data".to_string(),
            "file:///etc/passwd".to_string(),
            format!("{base}/../../../etc/passwd"),
            format!("{base}/runs/./x"),
            format!("{base}-other/x"),
            base.clone(),
        ] {
            let e = a.check_url(&url).expect_err(&url);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}: {e}");
        }
        a.check_url(&format!("{base}/runs/r/input.zip"))
            .expect("inside");
    }

    #[tokio::test]
    async fn a_staged_input_comes_back_unpacked_and_an_output_uploads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Artifacts::local(dir.path().join("art")).expect("store");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::write(src.join("d/f.txt"), b"hello").expect("write");
        let zip = zip::pack(&src, a.limits()).expect("pack");
        let url = a.stage_input("run-1", zip).await.expect("stage");
        assert_eq!(
            url,
            format!("{}/runs/run-1/input.zip", a.default_store().url())
        );
        let into = dir.path().join("in");
        let n = a.fetch_input(&url, &into).await.expect("fetch");
        assert_eq!(n.files, 1);
        assert_eq!(std::fs::read(into.join("d/f.txt")).expect("read"), b"hello");
        let out = a.upload_output(&into, "run-1", 2).await.expect("upload");
        assert!(out.ends_with("/runs/run-1/attempt-2/output.zip"), "{out}");
        let back = a.get(&out, 1 << 20).await.expect("get");
        let check = dir.path().join("check");
        zip::unpack(&back, &check, a.limits()).expect("unpack");
        assert_eq!(
            std::fs::read(check.join("d/f.txt")).expect("read"),
            b"hello"
        );
        let e = a.get(&out, 10).await.expect_err("over the bound");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn a_bad_inline_input_is_refused_before_it_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Artifacts::local(dir.path().join("art")).expect("store");
        let e = a
            .stage_input("run-2", b"not a zip".to_vec())
            .await
            .expect_err("refused");
        assert!(e.message().contains("input zip: not a zip archive"), "{e}");
        assert!(!dir.path().join("art/runs/run-2").exists());
    }
}
