//! Input validation with messages that name the field.
//!
//! Every string and list that comes from a user is bounded; the bounds live
//! in [`Limits`] so a deployment can tune them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{
    DefinitionUpdate, EnvVar, EvaluateOnExit, ExecuteRequest, FailureCategory, NewDefinition,
    NewTemplate, RetryAction, RetryStrategy, RunTags,
};

/// Prefix reserved for variables flotilla injects.
pub const RESERVED_ENV_PREFIX: &str = "FLOTILLA_";

/// Bounds on user input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Longest alias.
    pub max_alias_len: usize,
    /// Longest image reference.
    pub max_image_len: usize,
    /// Longest command.
    pub max_command_len: usize,
    /// Longest short string (group, owner, cluster, tag, key, ...).
    pub max_name_len: usize,
    /// Longest description or reason.
    pub max_text_len: usize,
    /// Most environment variables.
    pub max_env: usize,
    /// Longest environment value.
    pub max_env_value_len: usize,
    /// Most tags, labels or ports.
    pub max_items: usize,
    /// Memory bounds in MiB.
    pub memory_mib: (i64, i64),
    /// CPU bounds in millicores.
    pub cpu_millicores: (i64, i64),
    /// Most GPUs.
    pub max_gpu: i64,
    /// Longest deadline in seconds.
    pub max_deadline_seconds: i64,
    /// Largest page a list returns.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_alias_len: 128,
            max_image_len: 512,
            max_command_len: 64 * 1024,
            max_name_len: 256,
            max_text_len: 4096,
            max_env: 256,
            max_env_value_len: 32 * 1024,
            max_items: 64,
            memory_mib: (4, 1024 * 1024),
            cpu_millicores: (1, 256_000),
            max_gpu: 16,
            max_deadline_seconds: 30 * 24 * 3600,
            max_page: 1024,
        }
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field}: longer than {max} characters"
        )));
    }
    Ok(())
}

fn check_no_control(field: &str, value: &str) -> Result<()> {
    if value.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{field}: must not contain control characters"
        )));
    }
    Ok(())
}

/// Text a store cannot hold: NUL characters (PostgreSQL text refuses
/// them, and SQLite refuses them too so both accept the same input). The
/// error names `field`.
pub fn check_no_nul(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(format!(
            "{field}: must not contain NUL characters"
        )));
    }
    Ok(())
}

/// [`check_no_nul`] over the names and values of `env`.
pub fn check_env_no_nul(field: &str, env: &[EnvVar]) -> Result<()> {
    for e in env {
        check_no_nul(field, &e.name)?;
        check_no_nul(field, &e.value)?;
    }
    Ok(())
}

/// A short name: non-empty after trimming, bounded, no control characters.
pub fn check_name(field: &str, value: &str, limits: &Limits) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("{field}: required")));
    }
    check_len(field, value, limits.max_name_len)?;
    check_no_control(field, value)
}

/// An alias: `[A-Za-z0-9_.-]{1,max_alias_len}`.
pub fn check_alias(alias: &str, limits: &Limits) -> Result<()> {
    check_identifier("alias", alias, limits)
}

/// A name used in URLs (an alias, a template name):
/// `[A-Za-z0-9_.-]{1,max_alias_len}`.
fn check_identifier(field: &str, value: &str, limits: &Limits) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field}: required")));
    }
    check_len(field, value, limits.max_alias_len)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(format!(
            "{field}: '{value}' may only contain letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// A JSON document of a template (schema, defaults, payload): at most
/// `max_command_len` bytes as JSON, and no NUL in any key or string (the
/// stores cannot hold one).
pub fn check_json_doc(
    field: &str,
    value: &serde_json::Map<String, serde_json::Value>,
    limits: &Limits,
) -> Result<()> {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if value.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err(Error::invalid(format!(
            "{field}: must not contain NUL characters"
        )));
    }
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if size > limits.max_command_len {
        return Err(Error::invalid(format!(
            "{field}: larger than {} bytes as JSON",
            limits.max_command_len
        )));
    }
    Ok(())
}

/// Validates a template create body (the schema and the command template
/// are then checked by [`crate::render`]).
pub fn check_new_template(t: &NewTemplate, limits: &Limits) -> Result<()> {
    check_identifier("template_name", &t.template_name, limits)?;
    check_image(&t.image, limits)?;
    if t.command_template.trim().is_empty() {
        return Err(Error::invalid("command_template: required"));
    }
    check_len(
        "command_template",
        &t.command_template,
        limits.max_command_len,
    )?;
    check_no_nul("command_template", &t.command_template)?;
    if t.schema.is_empty() {
        return Err(Error::invalid("schema: required (a JSON Schema object)"));
    }
    check_json_doc("schema", &t.schema, limits)?;
    check_json_doc("defaults", &t.defaults, limits)?;
    check_len("avatar_uri", &t.avatar_uri, limits.max_text_len)?;
    check_no_control("avatar_uri", &t.avatar_uri)?;
    check_resources(t.memory, t.cpu, t.gpu, limits)?;
    check_env("env", &t.env, limits)?;
    check_list("tags", &t.tags, limits)?;
    check_ports(&t.ports, limits)
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, not reserved.
pub fn check_env_name(field: &str, name: &str, limits: &Limits) -> Result<()> {
    check_env_syntax(field, name, limits)?;
    if name.to_ascii_uppercase().starts_with(RESERVED_ENV_PREFIX) {
        return Err(Error::invalid(format!(
            "{field}: '{name}' is reserved: FLOTILLA_* variables are set by flotilla"
        )));
    }
    Ok(())
}

/// The syntax of a variable name, `[A-Za-z_][A-Za-z0-9_]*`, bounded.
pub fn check_env_syntax(field: &str, name: &str, limits: &Limits) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::invalid(format!(
            "{field}: '{name}' is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"
        )));
    }
    check_len(field, name, limits.max_name_len)
}

/// A user environment list.
pub fn check_env(field: &str, env: &[EnvVar], limits: &Limits) -> Result<()> {
    if env.len() > limits.max_env {
        return Err(Error::invalid(format!(
            "{field}: at most {} variables",
            limits.max_env
        )));
    }
    for (i, var) in env.iter().enumerate() {
        check_env_name(&format!("{field}[{i}].name"), &var.name, limits)?;
        check_len(
            &format!("{field}[{i}].value"),
            &var.value,
            limits.max_env_value_len,
        )?;
    }
    Ok(())
}

fn check_image(image: &str, limits: &Limits) -> Result<()> {
    if image.trim().is_empty() {
        return Err(Error::invalid("image: required"));
    }
    check_len("image", image, limits.max_image_len)?;
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid("image: must not contain whitespace"));
    }
    Ok(())
}

/// A command (a definition's, an override, a rendered template): bounded, no NUL.
pub fn check_command(command: Option<&str>, limits: &Limits) -> Result<()> {
    if let Some(c) = command {
        check_len("command", c, limits.max_command_len)?;
        if c.contains('\0') {
            return Err(Error::invalid("command: must not contain NUL"));
        }
    }
    Ok(())
}

fn check_range(field: &str, value: Option<i64>, (lo, hi): (i64, i64), unit: &str) -> Result<()> {
    if let Some(v) = value
        && !(lo..=hi).contains(&v)
    {
        return Err(Error::invalid(format!(
            "{field}: {v} is out of range ({lo}..={hi} {unit})"
        )));
    }
    Ok(())
}

fn check_resources(
    memory: Option<i64>,
    cpu: Option<i64>,
    gpu: Option<i64>,
    limits: &Limits,
) -> Result<()> {
    check_range("memory", memory, limits.memory_mib, "MiB")?;
    check_range("cpu", cpu, limits.cpu_millicores, "millicores")?;
    check_range("gpu", gpu, (0, limits.max_gpu), "GPUs")
}

fn check_list(field: &str, items: &[String], limits: &Limits) -> Result<()> {
    if items.len() > limits.max_items {
        return Err(Error::invalid(format!(
            "{field}: at most {} items",
            limits.max_items
        )));
    }
    for (i, item) in items.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), item, limits)?;
    }
    Ok(())
}

fn check_ports(ports: &[u16], limits: &Limits) -> Result<()> {
    if ports.len() > limits.max_items {
        return Err(Error::invalid(format!(
            "ports: at most {} items",
            limits.max_items
        )));
    }
    if ports.contains(&0) {
        return Err(Error::invalid("ports: 0 is not a port"));
    }
    Ok(())
}

fn check_attempts(max_attempts: Option<u32>) -> Result<()> {
    if let Some(n) = max_attempts
        && !(1..=20).contains(&n)
    {
        return Err(Error::invalid(format!(
            "max_attempts: {n} is out of range (1..=20)"
        )));
    }
    Ok(())
}

/// Most rules in a [`RetryStrategy`] (AWS Batch's limit).
pub const MAX_RETRY_RULES: usize = 5;

/// Longest retry-rule pattern (AWS Batch's limit).
pub const MAX_RETRY_PATTERN_LEN: usize = 512;

/// The range of [`RetryStrategy::attempts`] (AWS Batch's).
pub const RETRY_ATTEMPTS: (u32, u32) = (1, 10);

/// The shape every pattern shares: not empty, bounded, `*` only at the end.
fn check_pattern_shape(field: &str, pattern: &str) -> Result<()> {
    if pattern.is_empty() {
        return Err(Error::invalid(format!("{field}: must not be empty")));
    }
    check_len(field, pattern, MAX_RETRY_PATTERN_LEN)?;
    if pattern.strip_suffix('*').unwrap_or(pattern).contains('*') {
        return Err(Error::invalid(format!(
            "{field}: '{pattern}' may contain '*' only once, at the end"
        )));
    }
    Ok(())
}

/// A text pattern (`on_reason`, `on_status_reason`): letters, digits,
/// `.`, `:`, `_`, spaces and tabs (AWS Batch's set, plus `_` so category
/// names such as `node_lost` can be written), optionally ending with `*`.
fn check_text_pattern(field: &str, pattern: &str) -> Result<()> {
    check_pattern_shape(field, pattern)?;
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if let Some(c) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '_' | ' ' | '\t')))
    {
        return Err(Error::invalid(format!(
            "{field}: '{pattern}' contains {c:?}; patterns may contain letters, digits, '.', ':', '_', spaces and tabs, and end with '*'"
        )));
    }
    Ok(())
}

/// One rule of a retry strategy; `field` is its path.
fn check_retry_rule(field: &str, rule: &EvaluateOnExit) -> Result<()> {
    if !rule.has_condition() {
        return Err(Error::invalid(format!(
            "{field}: needs at least one of on_exit_code, on_reason, on_status_reason"
        )));
    }
    if let Some(p) = &rule.on_exit_code {
        let f = format!("{field}.on_exit_code");
        check_pattern_shape(&f, p)?;
        let digits = p.strip_suffix('*').unwrap_or(p);
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::invalid(format!(
                "{f}: '{p}' may contain only digits, optionally ending with '*'"
            )));
        }
    }
    if let Some(p) = &rule.on_reason {
        let f = format!("{field}.on_reason");
        check_text_pattern(&f, p)?;
        let matched: Vec<FailureCategory> = FailureCategory::ALL
            .into_iter()
            .filter(|c| crate::model::pattern_matches(p, Some(c.as_str())))
            .collect();
        let names = FailureCategory::ALL.map(FailureCategory::as_str).join(", ");
        if matched.is_empty() {
            return Err(Error::invalid(format!(
                "{f}: '{p}' matches no failure category ({names}); to match the engine's reason text use on_status_reason"
            )));
        }
        if rule.action == RetryAction::Retry && !matched.iter().any(|c| c.rules_may_retry()) {
            return Err(Error::invalid(format!(
                "{f}: '{p}' with action RETRY can never retry: unknown, terminated, timeout and submit_rejected attempts are final"
            )));
        }
    }
    if let Some(p) = &rule.on_status_reason {
        check_text_pattern(&format!("{field}.on_status_reason"), p)?;
    }
    Ok(())
}

/// Validates a retry strategy; errors name the field path under `field`
/// (e.g. `retry_strategy.evaluate_on_exit[1].on_exit_code`).
pub fn check_retry_strategy(field: &str, s: &RetryStrategy) -> Result<()> {
    let (lo, hi) = RETRY_ATTEMPTS;
    if let Some(n) = s.attempts
        && !(lo..=hi).contains(&n)
    {
        return Err(Error::invalid(format!(
            "{field}.attempts: {n} is out of range ({lo}..={hi})"
        )));
    }
    if s.evaluate_on_exit.len() > MAX_RETRY_RULES {
        return Err(Error::invalid(format!(
            "{field}.evaluate_on_exit: at most {MAX_RETRY_RULES} rules, got {}",
            s.evaluate_on_exit.len()
        )));
    }
    for (i, rule) in s.evaluate_on_exit.iter().enumerate() {
        check_retry_rule(&format!("{field}.evaluate_on_exit[{i}]"), rule)?;
    }
    Ok(())
}

/// Validates a create body.
pub fn check_new_definition(d: &NewDefinition, limits: &Limits) -> Result<()> {
    check_alias(&d.alias, limits)?;
    check_image(&d.image, limits)?;
    if !d.group_name.is_empty() {
        check_name("group_name", &d.group_name, limits)?;
    }
    check_command(d.command.as_deref(), limits)?;
    check_resources(d.memory, d.cpu, d.gpu, limits)?;
    check_env("env", &d.env, limits)?;
    check_list("tags", &d.tags, limits)?;
    check_ports(&d.ports, limits)?;
    check_attempts(d.max_attempts)?;
    if let Some(rs) = &d.retry_strategy {
        check_retry_strategy("retry_strategy", rs)?;
    }
    Ok(())
}

/// Validates an update body.
pub fn check_definition_update(u: &DefinitionUpdate, limits: &Limits) -> Result<()> {
    if let Some(image) = &u.image {
        check_image(image, limits)?;
    }
    if let Some(g) = &u.group_name
        && !g.is_empty()
    {
        check_name("group_name", g, limits)?;
    }
    check_command(u.command.as_deref(), limits)?;
    check_resources(u.memory, u.cpu, u.gpu, limits)?;
    if let Some(env) = &u.env {
        check_env("env", env, limits)?;
    }
    if let Some(tags) = &u.tags {
        check_list("tags", tags, limits)?;
    }
    if let Some(ports) = &u.ports {
        check_ports(ports, limits)?;
    }
    check_attempts(u.max_attempts)?;
    if let Some(rs) = &u.retry_strategy {
        check_retry_strategy("retry_strategy", rs)?;
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>, limits: &Limits) -> Result<()> {
    if labels.len() > limits.max_items {
        return Err(Error::invalid(format!(
            "labels: at most {} labels",
            limits.max_items
        )));
    }
    for (k, v) in labels {
        check_name("labels key", k, limits)?;
        check_len(&format!("labels.{k}"), v, limits.max_name_len)?;
        check_no_control(&format!("labels.{k}"), v)?;
    }
    Ok(())
}

/// Validates run tags; `owner_id` is required.
pub fn check_run_tags(tags: Option<&RunTags>, limits: &Limits) -> Result<()> {
    let Some(tags) = tags else {
        return Err(Error::invalid(
            "run_tags must exist in body and contain [owner_id]",
        ));
    };
    if tags.owner_id.trim().is_empty() {
        return Err(Error::invalid(
            "run_tags must exist in body and contain [owner_id]",
        ));
    }
    check_name("run_tags.owner_id", &tags.owner_id, limits)?;
    if let Some(e) = &tags.owner_email {
        check_len("run_tags.owner_email", e, limits.max_name_len)?;
    }
    if let Some(t) = &tags.team_name {
        check_len("run_tags.team_name", t, limits.max_name_len)?;
    }
    Ok(())
}

/// Validates an execute body.
pub fn check_execute(r: &ExecuteRequest, limits: &Limits) -> Result<()> {
    check_run_tags(r.run_tags.as_ref(), limits)?;
    if let Some(c) = &r.cluster {
        check_name("cluster", c, limits)?;
    }
    if let Some(e) = &r.engine {
        check_name("engine", e, limits)?;
    }
    if let Some(env) = &r.env {
        check_env("env", env, limits)?;
    }
    check_command(r.command.as_deref(), limits)?;
    check_resources(r.memory, r.cpu, r.gpu, limits)?;
    if let Some(k) = &r.idempotence_key {
        check_name("idempotence_key", k, limits)?;
    }
    if let Some(l) = &r.labels {
        check_labels(l, limits)?;
    }
    if let Some(d) = &r.description {
        check_len("description", d, limits.max_text_len)?;
    }
    if let Some(u) = &r.input_url {
        if r.input_zip.is_some() {
            return Err(Error::invalid(
                "input_url: give input_zip or input_url, not both",
            ));
        }
        check_len("input_url", u, limits.max_text_len)?;
    }
    check_range(
        "active_deadline_seconds",
        r.active_deadline_seconds,
        (1, limits.max_deadline_seconds),
        "seconds",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn alias_rules() {
        let l = limits();
        assert!(check_alias("hello-flotilla_1.0", &l).is_ok());
        for bad in ["", "has space", "slash/no", "é"] {
            let e = check_alias(bad, &l).expect_err(bad);
            assert!(e.message().starts_with("alias"), "{}", e.message());
        }
        assert!(check_alias(&"a".repeat(129), &l).is_err());
        assert!(check_alias(&"a".repeat(128), &l).is_ok());
    }

    #[test]
    fn env_rules() {
        let l = limits();
        assert!(check_env("env", &[EnvVar::new("_OK1", "x")], &l).is_ok());
        let e = check_env("env", &[EnvVar::new("1BAD", "x")], &l).expect_err("digit first");
        assert!(e.message().contains("env[0].name"), "{}", e.message());
        let e = check_env("env", &[EnvVar::new("FLOTILLA_RUN_ID", "x")], &l).expect_err("reserved");
        assert!(e.message().contains("reserved"));
        let e =
            check_env("env", &[EnvVar::new("flotilla_x", "x")], &l).expect_err("reserved any case");
        assert!(e.message().contains("reserved"));
        let many: Vec<_> = (0..257).map(|i| EnvVar::new(format!("V{i}"), "")).collect();
        assert!(check_env("env", &many, &l).is_err());
    }

    #[test]
    fn definition_rules() {
        let l = limits();
        let mut d = NewDefinition::new("a", "ubuntu:latest");
        assert!(check_new_definition(&d, &l).is_ok());
        d.image.clear();
        assert_eq!(
            check_new_definition(&d, &l).expect_err("image").message(),
            "image: required"
        );
        d.image = "ubuntu".into();
        d.memory = Some(0);
        assert!(
            check_new_definition(&d, &l)
                .expect_err("memory")
                .message()
                .starts_with("memory")
        );
        d.memory = Some(512);
        d.cpu = Some(-1);
        assert!(
            check_new_definition(&d, &l)
                .expect_err("cpu")
                .message()
                .starts_with("cpu")
        );
    }

    fn strategy(rules: Vec<EvaluateOnExit>) -> RetryStrategy {
        RetryStrategy {
            attempts: None,
            evaluate_on_exit: rules,
        }
    }

    fn retry_error(s: &RetryStrategy) -> String {
        let mut d = NewDefinition::new("a", "ubuntu");
        d.retry_strategy = Some(s.clone());
        let create = check_new_definition(&d, &limits())
            .expect_err("create refuses it")
            .message()
            .to_string();
        let u = DefinitionUpdate {
            retry_strategy: Some(s.clone()),
            ..Default::default()
        };
        let update = check_definition_update(&u, &limits()).expect_err("update refuses it");
        assert_eq!(update.message(), create, "update checks the same");
        create
    }

    #[test]
    fn retry_strategy_errors_name_the_field_path() {
        let ok = EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3");
        let rule = |r: EvaluateOnExit| strategy(vec![ok.clone(), r]);
        let cases: Vec<(RetryStrategy, &str)> = vec![
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_exit_code("3a")),
                "retry_strategy.evaluate_on_exit[1].on_exit_code: '3a' may contain only digits",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_exit_code("1*3")),
                "retry_strategy.evaluate_on_exit[1].on_exit_code: '1*3' may contain '*' only once, at the end",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_exit_code("**")),
                "retry_strategy.evaluate_on_exit[1].on_exit_code: '**' may contain '*' only once",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_exit_code("")),
                "retry_strategy.evaluate_on_exit[1].on_exit_code: must not be empty",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit)),
                "retry_strategy.evaluate_on_exit[1]: needs at least one of",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_status_reason("a*b*")),
                "retry_strategy.evaluate_on_exit[1].on_status_reason: 'a*b*' may contain '*' only once",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_status_reason("it's")),
                "retry_strategy.evaluate_on_exit[1].on_status_reason: 'it's' contains '\\''",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_status_reason("x".repeat(513))),
                "retry_strategy.evaluate_on_exit[1].on_status_reason: longer than 512",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Exit).on_reason("OutOfMemoryError*")),
                "retry_strategy.evaluate_on_exit[1].on_reason: 'OutOfMemoryError*' matches no failure category",
            ),
            (
                rule(EvaluateOnExit::new(RetryAction::Retry).on_reason("unknown")),
                "retry_strategy.evaluate_on_exit[1].on_reason: 'unknown' with action RETRY can never retry",
            ),
            (
                RetryStrategy {
                    attempts: Some(11),
                    evaluate_on_exit: vec![],
                },
                "retry_strategy.attempts: 11 is out of range (1..=10)",
            ),
            (
                RetryStrategy {
                    attempts: Some(0),
                    evaluate_on_exit: vec![],
                },
                "retry_strategy.attempts: 0 is out of range (1..=10)",
            ),
            (
                strategy(vec![ok.clone(); 6]),
                "retry_strategy.evaluate_on_exit: at most 5 rules, got 6",
            ),
        ];
        for (s, want) in cases {
            let got = retry_error(&s);
            assert!(got.starts_with(want), "{s:?}: {got}");
        }
    }

    #[test]
    fn valid_retry_strategies_pass() {
        let l = limits();
        let mut d = NewDefinition::new("a", "ubuntu");
        d.max_attempts = Some(20);
        d.retry_strategy = Some(RetryStrategy {
            attempts: Some(10),
            evaluate_on_exit: vec![
                EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3"),
                EvaluateOnExit::new(RetryAction::Retry).on_exit_code("1*"),
                EvaluateOnExit::new(RetryAction::Exit).on_reason("node_lost"),
                EvaluateOnExit::new(RetryAction::Exit)
                    .on_reason("*")
                    .on_status_reason("Host EC2 instance terminated.\tx*"),
                EvaluateOnExit::new(RetryAction::Exit).on_exit_code("*"),
            ],
        });
        check_new_definition(&d, &l).expect("five valid rules");
        d.retry_strategy = Some(RetryStrategy::default());
        assert!(check_new_definition(&d, &l).is_ok(), "an empty strategy");
        let clear = DefinitionUpdate {
            retry_strategy: Some(RetryStrategy::default()),
            ..Default::default()
        };
        assert!(check_definition_update(&clear, &l).is_ok(), "clearing");
    }

    #[test]
    fn execute_needs_owner() {
        let l = limits();
        let e = check_execute(&ExecuteRequest::default(), &l).expect_err("owner");
        assert_eq!(
            e.message(),
            "run_tags must exist in body and contain [owner_id]"
        );
        assert!(check_execute(&ExecuteRequest::owned_by("me"), &l).is_ok());
        let mut r = ExecuteRequest::owned_by("me");
        r.active_deadline_seconds = Some(0);
        assert!(check_execute(&r, &l).is_err());
    }
}
