//! Templates: store versions, read and list them, and execute one — the
//! payload merged over the defaults, checked against the schema and
//! rendered into the command of a run.

use serde_json::{Map, Value};

use super::Flotilla;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    Actor, EnvVar, ExecuteRequest, NewTemplate, Run, Template, TemplateRun, merge_payload,
};
use crate::query::{Page, TemplateQuery};
use crate::render;
use crate::validate;

/// Injected into template runs: the template's name (history by name
/// filters runs on it).
pub const ENV_TEMPLATE_NAME: &str = "FLOTILLA_TEMPLATE_NAME";
/// Injected into template runs: the version's id.
pub const ENV_TEMPLATE_ID: &str = "FLOTILLA_TEMPLATE_ID";
/// Injected into template runs: the version number.
pub const ENV_TEMPLATE_VERSION: &str = "FLOTILLA_TEMPLATE_VERSION";

/// How often [`Flotilla::create_template`] reads the latest version again
/// after another writer took the version it meant to store.
const CREATE_ATTEMPTS: usize = 8;

impl Flotilla {
    /// Stores `new` as the next version of its name and returns
    /// `(did_create, version)`: a new name is version 1; content equal to
    /// the latest version's returns that version with `false`; changed
    /// content is the latest version + 1. Concurrent writers are safe: the
    /// store refuses a taken `(name, version)` and the loser reads again.
    pub async fn create_template(&self, new: NewTemplate) -> Result<(bool, Template)> {
        validate::check_new_template(&new, &self.inner.config.limits)?;
        render::check_schema(&new.schema)?;
        render::check_command_template(&new.command_template)?;
        let store = &self.inner.store;
        for _ in 0..CREATE_ATTEMPTS {
            let latest = match store.get_template_by_name(&new.template_name, None).await {
                Ok(t) => Some(t),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if let Some(l) = &latest
                && new.same_content(l)
            {
                return Ok((false, l.clone()));
            }
            let version = latest.map_or(1, |l| l.version.saturating_add(1));
            let template = new.clone().into_template(version);
            match store.create_template(&template).await {
                Ok(()) => return Ok((true, template)),
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(format!(
            "template_name: '{}' is being changed by other writers; try again",
            new.template_name
        )))
    }

    /// A template version by id.
    pub async fn get_template(&self, template_id: &str) -> Result<Template> {
        self.inner.store.get_template(template_id).await
    }

    /// Version `version` of the template named `name`; the latest when
    /// `None`.
    pub async fn get_template_by_name(&self, name: &str, version: Option<u32>) -> Result<Template> {
        self.inner.store.get_template_by_name(name, version).await
    }

    /// Lists template versions; `limit` is capped by `limits.max_page`.
    pub async fn list_templates(&self, mut query: TemplateQuery) -> Result<Page<Template>> {
        query.limit = self.limit(query.limit);
        self.inner.store.list_templates(&query).await
    }

    /// Executes `template` for `actor` with `payload`: the payload is
    /// deep-merged over the template's defaults, checked against its
    /// schema (`InvalidInput` naming every wrong field) and rendered into
    /// the command, which must meet the limits of a definition's command.
    /// The rest of `request` (owner, cluster, engine, env, resources) is as
    /// for [`Flotilla::execute_as`]; a `command` is refused (the template
    /// renders it). The run carries the template and the merged payload
    /// ([`Run::template`]) and `FLOTILLA_TEMPLATE_{NAME,ID,VERSION}` in its
    /// env. With `dry_run` the run that would be made is returned and
    /// nothing is stored or queued.
    pub async fn execute_template_as(
        &self,
        template: &Template,
        payload: Map<String, Value>,
        request: ExecuteRequest,
        dry_run: bool,
        actor: &Actor,
    ) -> Result<Run> {
        let limits = &self.inner.config.limits;
        validate::check_execute(&request, limits)?;
        if request.command.is_some() {
            return Err(Error::invalid(
                "command: a template run's command is rendered from its command_template; send template_payload instead",
            ));
        }
        validate::check_json_doc("template_payload", &payload, limits)?;
        let merged = merge_payload(&template.defaults, &payload);
        render::validate_payload(&template.schema, &merged)?;
        let command = render::render_command(&template.command_template, &merged)?;
        if command.trim().is_empty() {
            return Err(Error::invalid(
                "command: the command_template rendered to nothing",
            ));
        }
        validate::check_command(Some(&command), limits)?;
        let mut def = template.as_definition(Some(command));
        for (name, value) in [
            (ENV_TEMPLATE_NAME, template.template_name.clone()),
            (ENV_TEMPLATE_ID, template.template_id.clone()),
            (ENV_TEMPLATE_VERSION, template.version.to_string()),
        ] {
            def.env.push(EnvVar::new(name, value));
        }
        let made_from = TemplateRun {
            template_id: template.template_id.clone(),
            template_name: template.template_name.clone(),
            version: template.version,
            payload: merged,
        };
        let cluster = self.get_cluster(&self.request_cluster(&request)).await;
        self.execute_definition(&def, request, actor, Some(made_from), dry_run, cluster)
            .await
    }
}
