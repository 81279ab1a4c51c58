//! Registry credentials for image pulls, from a Docker client configuration
//! file (`config.json`: `auths`, `credHelpers`, `credsStore`), read with the
//! `docker_credential` crate.

use std::path::{Path, PathBuf};

use bollard::auth::DockerCredentials;
use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::error::{DResult, DockerError, DockerErrorKind};

/// The registry key of the Docker Hub in `config.json`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The default client configuration: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub(crate) fn default_config_file() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// The registry an image is pulled from: its first path component when
/// that names a host (`registry.example.com/x`, `127.0.0.1:5000/x`,
/// `localhost/x`), else the Docker Hub.
pub(crate) fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => DOCKER_HUB,
    }
}

/// The credentials `file` holds for the registry of `image`: `Ok(None)`
/// when there is no file or no entry for that registry. A file that cannot
/// be read or a credential helper that fails is an error naming the file
/// (the pull would fail without them anyway).
pub(crate) async fn for_image(
    file: Option<&Path>,
    image: &str,
) -> DResult<Option<DockerCredentials>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let bytes = match tokio::fs::read(file).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DockerError::new(
                DockerErrorKind::ImagePull,
                format!("registry credentials: cannot read {}: {e}", file.display()),
            ));
        }
    };
    let server = registry_of(image).to_string();
    let lookup = server.clone();
    // A credential helper is a process: keep it off the async threads.
    let found = tokio::task::spawn_blocking(move || {
        docker_credential::get_credential_from_reader(bytes.as_slice(), &lookup)
    })
    .await
    .map_err(|e| {
        DockerError::new(
            DockerErrorKind::Daemon,
            format!("registry credentials: lookup task failed: {e}"),
        )
    })?;
    match found {
        Ok(DockerCredential::UsernamePassword(username, password)) => Ok(Some(DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(server),
            ..Default::default()
        })),
        Ok(DockerCredential::IdentityToken(token)) => Ok(Some(DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(server),
            ..Default::default()
        })),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        Err(e) => Err(DockerError::new(
            DockerErrorKind::ImagePull,
            format!(
                "registry credentials for {server} from {}: {e}",
                file.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_the_first_component_when_it_names_a_host() {
        assert_eq!(registry_of("busybox"), DOCKER_HUB);
        assert_eq!(registry_of("library/busybox:1"), DOCKER_HUB);
        assert_eq!(registry_of("127.0.0.1:5000/x:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/o/x"), "ghcr.io");
        assert_eq!(registry_of("localhost/x"), "localhost");
    }

    #[tokio::test]
    async fn auths_entries_become_credentials_and_a_missing_file_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.json");
        // "user:pa:ss" in base64: the password may hold a colon.
        std::fs::write(
            &file,
            r#"{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="}}}"#,
        )
        .expect("write");
        let c = for_image(Some(&file), "127.0.0.1:5000/x:1")
            .await
            .expect("lookup")
            .expect("an entry");
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some("pa:ss"));
        assert_eq!(
            for_image(Some(&file), "other.example/x")
                .await
                .expect("lookup"),
            None
        );
        assert_eq!(
            for_image(Some(&dir.path().join("absent.json")), "127.0.0.1:5000/x")
                .await
                .expect("lookup"),
            None
        );
        std::fs::write(&file, "not json").expect("write");
        assert!(for_image(Some(&file), "127.0.0.1:5000/x").await.is_err());
    }
}
