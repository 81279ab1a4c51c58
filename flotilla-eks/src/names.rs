//! Kubernetes names and labels from flotilla ids: DNS-1123 labels and label
//! values that are always valid, and stable for one run attempt.

/// Label every flotilla Job and pod carries; watches select on it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "flotilla";
/// Label with the (sanitized) run id.
pub const LABEL_RUN_ID: &str = "flotilla-run-id";
/// Label with the attempt.
pub const LABEL_ATTEMPT: &str = "flotilla-attempt";
/// Label with the (sanitized) owner.
pub const LABEL_OWNER: &str = "flotilla-owner";
/// Label with the (sanitized) cluster.
pub const LABEL_CLUSTER: &str = "flotilla-cluster";
/// Annotation with the exact run id.
pub const ANNOTATION_RUN_ID: &str = "flotilla.io/run-id";
/// Annotation with the attempt.
pub const ANNOTATION_ATTEMPT: &str = "flotilla.io/attempt";
/// Label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "job-name";

/// The selector of everything flotilla manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// Lowercase alphanumerics and `-`, no leading/trailing/double `-`.
fn dns_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The Job name of a run attempt: `flotilla-<run id>-a<attempt>`, a valid
/// DNS-1123 label short enough that the pods' names (Job name plus six
/// characters) stay valid. Run ids that are not already DNS-safe, or too
/// long, are shortened and suffixed with a hash of the original so two runs
/// never share a name.
pub fn job_name(run_id: &str, attempt: u32) -> String {
    let suffix = format!("-a{attempt}");
    let mut id = dns_part(run_id);
    // 63 (label) - 6 (pod suffix) - "flotilla-" - suffix.
    let room = 57 - 9 - suffix.len();
    if id != run_id || id.len() > room {
        let hash = format!("{:08x}", flotilla::hash::fnv1a(run_id.as_bytes()) as u32);
        let keep = room.saturating_sub(hash.len() + 1);
        id.truncate(keep);
        let id = id.trim_end_matches('-');
        let id = if id.is_empty() {
            hash
        } else {
            format!("{id}-{hash}")
        };
        return format!("flotilla-{id}{suffix}");
    }
    format!("flotilla-{id}{suffix}")
}

/// A valid label value (≤ 63 of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends; empty is valid).
pub fn label_value(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(63);
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// A valid label key (optional DNS prefix `/` name), or `None` when `s`
/// cannot be made one.
pub fn label_key(s: &str) -> Option<String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name = label_value(name);
    if name.is_empty() {
        return None;
    }
    match prefix {
        None => Some(name),
        Some(p) => {
            let p: Vec<String> = p
                .split('.')
                .map(dns_part)
                .filter(|x| !x.is_empty())
                .collect();
            let p = p.join(".");
            if p.is_empty() || p.len() > 253 {
                Some(name)
            } else {
                Some(format!("{p}/{name}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns1123(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn uuid_run_ids_keep_their_id() {
        let id = "0193a4f2-7c1e-7b3a-9d2e-4f5a6b7c8d9e";
        let n = job_name(id, 1);
        assert_eq!(n, format!("flotilla-{id}-a1"));
        assert!(is_dns1123(&format!("{n}-abcde")));
        assert_ne!(job_name(id, 2), n);
    }

    #[test]
    fn odd_run_ids_are_made_safe_and_stay_distinct() {
        for id in [
            "Run_42",
            "run 42",
            "RUN-42",
            "x".repeat(200).as_str(),
            "---",
            "ü",
        ] {
            let n = job_name(id, 12);
            assert!(is_dns1123(&format!("{n}-abcde")), "{id} -> {n}");
        }
        assert_ne!(job_name("Run_42", 1), job_name("run-42", 1));
        assert_ne!(job_name("RUN-42", 1), job_name("run-42", 1));
    }

    #[test]
    fn hashed_job_names_never_change() {
        // Pinned from the private FNV-1a this crate had before it used
        // flotilla::hash::fnv1a: Jobs already created must keep their names.
        assert_eq!(job_name("Run_42", 1), "flotilla-run-42-24283ba9-a1");
        assert_eq!(job_name("ü", 3), "flotilla-b71807ea-a3");
    }

    #[test]
    fn labels_are_valid() {
        assert_eq!(label_value("alice@example.com"), "alice_example.com");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_key("team/Name").as_deref(), Some("team/Name"));
        assert_eq!(
            label_key("Example.COM/x y").as_deref(),
            Some("example.com/x_y")
        );
        assert_eq!(label_key("///"), None);
    }
}
