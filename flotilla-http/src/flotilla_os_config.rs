//! flotilla-os's configuration names, so a flotilla-os deployment's
//! settings carry over: its YAML keys in the configuration file and its
//! environment variables (viper's `.` → `_`, upper case), translated to
//! this server's keys before the configuration is read.
//!
//! | flotilla-os | here |
//! |---|---|
//! | `flotilla_mode` / `FLOTILLA_MODE` | `mode` |
//! | `database_url` / `DATABASE_URL` | `database_url` |
//! | `http.server.listen_address` / `HTTP_SERVER_LISTEN_ADDRESS` (`:3000` is every interface, as in Go) | `listen` |
//! | `worker.submit_interval` / `WORKER_SUBMIT_INTERVAL` (Go duration) | `workers.receive_wait` |
//! | `worker.status_interval` / `WORKER_STATUS_INTERVAL` | `workers.status_poll_interval` |
//! | `worker.retry_interval` / `WORKER_RETRY_INTERVAL` | `workers.reconcile_interval` |
//! | `enabled_workers` / `ENABLED_WORKERS` (`retry,submit,status`) | `enabled_workers` |
//! | `owner_id_var` / `OWNER_ID_VAR` | `owner_id_var` |
//! | `metrics.dogstatsd.address`, `.namespace` / `METRICS_DOGSTATSD_*` | `metrics.dogstatsd.*` |
//! | `state_manager: postgres` | `store = "postgres"` |
//! | `queue_manager: sqs` / `postgres` | `queue` |
//! | `cluster_client: ecs` / `eks` | `engines` |
//!
//! This server's own keys and `FLOTILLA_*` variables win over these.

use figment::value::{Dict, Value};

use crate::error::{Error, Result};

/// The flotilla-os environment variables read, with the key each sets.
const ENV: &[(&str, &str)] = &[
    ("HTTP_SERVER_LISTEN_ADDRESS", "http.server.listen_address"),
    ("WORKER_SUBMIT_INTERVAL", "worker.submit_interval"),
    ("WORKER_STATUS_INTERVAL", "worker.status_interval"),
    ("WORKER_RETRY_INTERVAL", "worker.retry_interval"),
    ("ENABLED_WORKERS", "enabled_workers"),
    ("OWNER_ID_VAR", "owner_id_var"),
    ("METRICS_DOGSTATSD_ADDRESS", "metrics.dogstatsd.address"),
    ("METRICS_DOGSTATSD_NAMESPACE", "metrics.dogstatsd.namespace"),
];

/// flotilla-os's settings from the environment, as this server's keys.
pub fn from_env() -> Result<Dict> {
    let mut flat = Vec::new();
    for (var, key) in ENV {
        if let Ok(v) = std::env::var(var) {
            flat.push((key.to_string(), v));
        }
    }
    let mut out = Dict::new();
    for (key, value) in flat {
        let value = match key.as_str() {
            "enabled_workers" => Value::from(
                value
                    .split(',')
                    .map(|w| w.trim().to_string())
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>(),
            ),
            _ => Value::from(value),
        };
        translate_one(&key, value, &mut out)?;
    }
    Ok(out)
}

/// Takes the flotilla-os keys out of a configuration file's top level and
/// returns them under this server's names; what is left of `dict` is this
/// server's own keys, merged over them (so they win).
pub fn translate_file(dict: &mut Dict) -> Result<Dict> {
    let mut found = Vec::new();
    if let Some(v) = dict.remove("flotilla_mode") {
        found.push(("flotilla_mode".to_string(), v));
    }
    for key in ["state_manager", "queue_manager", "cluster_client"] {
        if let Some(v) = dict.remove(key) {
            found.push((key.to_string(), v));
        }
    }
    if let Some(Value::Dict(_, mut worker)) = dict.remove("worker") {
        for (k, v) in std::mem::take(&mut worker) {
            found.push((format!("worker.{k}"), v));
        }
    }
    if let Some(Value::Dict(_, http)) = dict.get_mut("http")
        && let Some(Value::Dict(_, server)) = http.remove("server")
    {
        for (k, v) in server {
            found.push((format!("http.server.{k}"), v));
        }
    }
    if let Some(Value::Dict(_, http)) = dict.get("http")
        && http.is_empty()
    {
        dict.remove("http");
    }
    let mut translated = Dict::new();
    for (key, value) in found {
        translate_one(&key, value, &mut translated)?;
    }
    Ok(translated)
}

/// Sets `key` (a flotilla-os name) in `out` under this server's name.
fn translate_one(key: &str, value: Value, out: &mut Dict) -> Result<()> {
    let text = || {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::config(format!("{key}: expected text")))
    };
    match key {
        "flotilla_mode" => set(out, &["mode"], Value::from(text()?)),
        "http.server.listen_address" => {
            set(out, &["listen"], Value::from(listen_address(&text()?)))
        }
        "worker.submit_interval" => set(
            out,
            &["workers", "receive_wait"],
            Value::from(go_duration_ms(key, &text()?)?),
        ),
        "worker.status_interval" => set(
            out,
            &["workers", "status_poll_interval"],
            Value::from(go_duration_ms(key, &text()?)?),
        ),
        "worker.retry_interval" => set(
            out,
            &["workers", "reconcile_interval"],
            Value::from(go_duration_ms(key, &text()?)?),
        ),
        "enabled_workers" => set(out, &["enabled_workers"], value),
        "owner_id_var" => set(out, &["owner_id_var"], value),
        "metrics.dogstatsd.address" => set(out, &["metrics", "dogstatsd", "address"], value),
        "metrics.dogstatsd.namespace" => set(out, &["metrics", "dogstatsd", "namespace"], value),
        "state_manager" => match text()?.as_str() {
            "postgres" => set(out, &["store"], Value::from("postgres")),
            other => {
                return Err(Error::config(format!(
                    "state_manager: '{other}' has no counterpart here (postgres, or this server's store = sqlite | memory)"
                )));
            }
        },
        "queue_manager" => match text()?.as_str() {
            q @ ("sqs" | "postgres") => set(out, &["queue"], Value::from(q)),
            other => {
                return Err(Error::config(format!(
                    "queue_manager: '{other}' has no counterpart here (sqs or postgres)"
                )));
            }
        },
        "cluster_client" => match text()?.as_str() {
            e @ ("ecs" | "eks") => set(out, &["engines"], Value::from(vec![e.to_string()])),
            other => {
                return Err(Error::config(format!(
                    "cluster_client: '{other}' has no counterpart here (ecs or eks)"
                )));
            }
        },
        other => {
            return Err(Error::config(format!(
                "{other}: a flotilla-os setting this server has no counterpart for"
            )));
        }
    }
    Ok(())
}

/// Go's `:3000` listens on every interface; `host:port` stays.
fn listen_address(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

/// A Go duration (`5s`, `500ms`, `1m30s`, `2h`) in milliseconds.
fn go_duration_ms(key: &str, text: &str) -> Result<u64> {
    let bad = || {
        Error::config(format!(
            "{key}: '{text}' is not a Go duration like 5s, 500ms or 1m30s"
        ))
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3_600e3,
            _ => return Err(bad()),
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}

fn set(out: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            out.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = out
                .entry((*first).to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                set(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_to_milliseconds() {
        assert_eq!(go_duration_ms("k", "5s").expect("5s"), 5_000);
        assert_eq!(go_duration_ms("k", "500ms").expect("ms"), 500);
        assert_eq!(go_duration_ms("k", "1m30s").expect("1m30s"), 90_000);
        assert_eq!(go_duration_ms("k", "1.5h").expect("h"), 5_400_000);
        for bad in ["", "5", "5x", "s", "1e9999h", "-1s"] {
            let e = go_duration_ms("worker.submit_interval", bad).expect_err(bad);
            assert!(e.to_string().contains("worker.submit_interval"), "{e}");
        }
    }

    #[test]
    fn go_listen_addresses_keep_their_meaning() {
        assert_eq!(listen_address(":3000"), "0.0.0.0:3000");
        assert_eq!(listen_address("127.0.0.1:3000"), "127.0.0.1:3000");
    }
}
