//! The crate's error type: one [`DockerError`] with a [`DockerErrorKind`],
//! mapped into [`flotilla::Error`].

use flotilla::ErrorKind;

/// What went wrong, so callers decide without matching on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DockerErrorKind {
    /// The daemon could not be reached or answered with a server error:
    /// retry later (`Unavailable`).
    Daemon,
    /// The container or image does not exist (`NotFound`).
    NotFound,
    /// A container of that name exists already (`Conflict`).
    Conflict,
    /// The request or a client-held value (a cursor) is not acceptable
    /// (`InvalidInput`).
    Invalid,
    /// The image could not be pulled (a permanent failure of the attempt).
    ImagePull,
    /// The data dir (archived logs, outcomes, stop requests) failed
    /// (`Internal`).
    Storage,
}

/// An error of the Docker backend.
#[derive(Debug)]
pub struct DockerError {
    kind: DockerErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DockerError {
    /// An error of `kind`.
    pub fn new(kind: DockerErrorKind, message: impl Into<String>) -> Self {
        DockerError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> DockerErrorKind {
        self.kind
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == DockerErrorKind::Daemon
    }

    /// Classifies a bollard error, `what` naming the call.
    pub fn from_bollard(what: &str, e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        let kind = match &e {
            B::DockerResponseServerError { status_code, .. } => match *status_code {
                404 => DockerErrorKind::NotFound,
                409 => DockerErrorKind::Conflict,
                400 => DockerErrorKind::Invalid,
                _ => DockerErrorKind::Daemon,
            },
            _ => DockerErrorKind::Daemon,
        };
        DockerError {
            kind,
            message: format!("docker: {what}: {e}"),
            source: Some(Box::new(e)),
        }
    }

    /// An error of the artifact stores (staging an input): a bad zip is
    /// `Invalid`, an unreachable store `Daemon` (retried), the rest
    /// `Storage`.
    pub(crate) fn artifacts(e: flotilla::Error) -> Self {
        let kind = match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::NotFound => DockerErrorKind::Invalid,
            ErrorKind::Unavailable | ErrorKind::RateLimited => DockerErrorKind::Daemon,
            _ => DockerErrorKind::Storage,
        };
        DockerError {
            kind,
            message: e.message().to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// An I/O error of the data dir.
    pub(crate) fn storage(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        DockerError {
            kind: DockerErrorKind::Storage,
            message: format!("docker engine data dir: {what}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

impl std::fmt::Display for DockerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DockerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<DockerError> for flotilla::Error {
    fn from(e: DockerError) -> Self {
        let kind = match e.kind {
            DockerErrorKind::Daemon => ErrorKind::Unavailable,
            DockerErrorKind::NotFound => ErrorKind::NotFound,
            DockerErrorKind::Conflict => ErrorKind::Conflict,
            DockerErrorKind::Invalid | DockerErrorKind::ImagePull => ErrorKind::InvalidInput,
            DockerErrorKind::Storage => ErrorKind::Internal,
        };
        let message = e.message.clone();
        flotilla::Error::new(kind, message).with_source(e)
    }
}

/// This crate's results.
pub(crate) type DResult<T> = std::result::Result<T, DockerError>;
