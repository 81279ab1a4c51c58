//! The external services a backend's tests need (moto, dockerd, ...),
//! found through environment variables, with one rule for their absence.

/// The values of `vars`, when every one is set and not empty.
///
/// Otherwise a missing service is a failure under `CI` (a panic naming the
/// variables and `how` to start the service: CI never skips a test), and
/// elsewhere a loud warning that the `what` test did not run, and `None`.
pub fn service_env(vars: &[&str], what: &str, how: &str) -> Option<Vec<String>> {
    let values: Vec<Option<String>> = vars
        .iter()
        .map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .collect();
    if values.iter().all(Option::is_some) {
        return Some(values.into_iter().flatten().collect());
    }
    let names = vars.join(" / ");
    if std::env::var_os("CI").is_some() {
        panic!("{names} not set: {how}");
    }
    eprintln!(
        "\n!!!!!!!! WARNING: {names} not set; this {what} test did NOT run.\n!!!!!!!! To run it: {how}\n"
    );
    None
}
