//! Templates (flotilla-os v7): an image and resources, a JSON Schema for a
//! payload and a command template in Go's text/template syntax. A user runs
//! one by sending a payload; the service merges it over the `defaults`,
//! validates it against the `schema` and renders the command (see
//! [`crate::service`]'s `execute_template`).
//!
//! Templates are immutable: changing one stores a new version under the
//! same name; a version's id names exactly one content forever.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Definition, EnvVar, new_id, now};

/// The `executable_type` of runs made from a template (flotilla-os's
/// spelling); runs of definitions carry none.
pub const EXECUTABLE_TYPE_TEMPLATE: &str = "template";

/// One stored version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Opaque id of this version: `tpl-` and a UUID v7, so it never equals
    /// a definition id.
    pub template_id: String,
    /// Name shared by every version, `[A-Za-z0-9_.-]{1,128}`.
    pub template_name: String,
    /// Version, 1 for the first of a name, then one more per change.
    pub version: u32,
    /// JSON Schema the merged payload must satisfy.
    pub schema: Map<String, Value>,
    /// The command, a Go text/template rendered with the payload as `.`.
    pub command_template: String,
    /// Payload values used where the request's payload has none
    /// (deep-merged: the request wins, objects merge key by key).
    #[serde(default)]
    pub defaults: Map<String, Value>,
    /// An image for people (a URL), shown by UIs.
    #[serde(default)]
    pub avatar_uri: String,
    /// Container image.
    pub image: String,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<i64>,
    /// CPU in millicores.
    #[serde(default)]
    pub cpu: Option<i64>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// Environment of every run, always an array.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Retry `oom` failures with more memory.
    #[serde(default)]
    pub adaptive_resource_allocation: bool,
    /// Container ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who stored this version (empty when the server has no identities).
    #[serde(default)]
    pub owner: String,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
}

impl Template {
    /// The definition a run of this version executes: the template id as
    /// `definition_id`, its name as `alias`, its image, resources, env,
    /// ports and tags, and `command` (the rendered one).
    pub fn as_definition(&self, command: Option<String>) -> Definition {
        Definition {
            definition_id: self.template_id.clone(),
            alias: self.template_name.clone(),
            group_name: String::new(),
            image: self.image.clone(),
            command,
            memory: self.memory,
            cpu: self.cpu,
            gpu: self.gpu,
            env: self.env.clone(),
            tags: self.tags.clone(),
            ports: self.ports.clone(),
            adaptive_resource_allocation: self.adaptive_resource_allocation,
            max_attempts: None,
            retry_on_app_exit: false,
            retry_strategy: None,
            skip_failed_output: false,
            owner: self.owner.clone(),
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// What a run made from a template keeps of it: the version and the
/// payload (merged over the defaults) its command was rendered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRun {
    /// The version's id (the run's `executable_id`).
    pub template_id: String,
    /// The template's name.
    pub template_name: String,
    /// The version.
    pub version: u32,
    /// The merged, validated payload (flotilla-os's
    /// `execution_request_custom.template_payload`).
    pub payload: Map<String, Value>,
}

/// The body of a template create (flotilla-os's `CreateTemplateRequest`):
/// a template without id, version and time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewTemplate {
    /// Name (required).
    #[serde(default)]
    pub template_name: String,
    /// JSON Schema of the payload (required, an object).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: Map<String, Value>,
    /// Command template, Go text/template syntax (required).
    #[serde(default)]
    pub command_template: String,
    /// Payload defaults.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub defaults: Map<String, Value>,
    /// An image for people (a URL).
    #[serde(default)]
    pub avatar_uri: String,
    /// Image (required).
    #[serde(default)]
    pub image: String,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<i64>,
    /// CPU in millicores.
    #[serde(default)]
    pub cpu: Option<i64>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Retry `oom` with more memory.
    #[serde(default)]
    pub adaptive_resource_allocation: bool,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The owner to record (the HTTP layer sets the caller's identity).
    #[serde(default)]
    pub owner: String,
}

impl NewTemplate {
    /// Whether `stored` has this content (everything but id, version,
    /// owner and time): posting it again makes no new version.
    pub fn same_content(&self, stored: &Template) -> bool {
        self.template_name == stored.template_name
            && self.schema == stored.schema
            && self.command_template == stored.command_template
            && self.defaults == stored.defaults
            && self.avatar_uri == stored.avatar_uri
            && self.image == stored.image
            && self.memory == stored.memory
            && self.cpu == stored.cpu
            && self.gpu == stored.gpu
            && self.env == stored.env
            && self.adaptive_resource_allocation == stored.adaptive_resource_allocation
            && self.ports == stored.ports
            && self.tags == stored.tags
    }

    /// This content as version `version`, with a fresh id, stored now.
    pub fn into_template(self, version: u32) -> Template {
        Template {
            template_id: new_template_id(),
            template_name: self.template_name,
            version,
            schema: self.schema,
            command_template: self.command_template,
            defaults: self.defaults,
            avatar_uri: self.avatar_uri,
            image: self.image,
            memory: self.memory,
            cpu: self.cpu,
            gpu: self.gpu,
            env: self.env,
            adaptive_resource_allocation: self.adaptive_resource_allocation,
            ports: self.ports,
            tags: self.tags,
            owner: self.owner,
            created_at: now(),
        }
    }
}

/// A new template id: `tpl-` and a UUID v7 (flotilla-os's ids start with
/// `tpl-` too).
pub fn new_template_id() -> String {
    format!("tpl-{}", new_id())
}

/// `payload` deep-merged over `defaults`: a key of `payload` wins, except
/// that where both hold an object the two merge key by key, recursively.
pub fn merge_payload(
    defaults: &Map<String, Value>,
    payload: &Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = defaults.clone();
    for (key, value) in payload {
        match (merged.get_mut(key), value) {
            (Some(Value::Object(base)), Value::Object(over)) => {
                *base = merge_payload(base, over);
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn payload_wins_and_objects_merge_key_by_key() {
        let defaults = obj(json!({"a": 1, "nested": {"x": "d", "y": "d"}, "list": [1, 2]}));
        let payload = obj(json!({"b": 2, "nested": {"y": "p"}, "list": [3]}));
        let merged = merge_payload(&defaults, &payload);
        assert_eq!(
            Value::Object(merged),
            json!({"a": 1, "b": 2, "nested": {"x": "d", "y": "p"}, "list": [3]})
        );
    }

    #[test]
    fn template_ids_never_look_like_definition_ids() {
        let id = new_template_id();
        assert!(id.starts_with("tpl-"), "{id}");
        assert_ne!(new_template_id(), id);
    }
}
