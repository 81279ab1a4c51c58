//! Definitions: define, update, delete, get and list; groups and tags.

use super::Flotilla;

use crate::error::{Error, Result};
use crate::model::{Actor, Definition, DefinitionUpdate, NewDefinition};
use crate::query::{DefinitionQuery, Page};
use crate::validate::{self};

impl Flotilla {
    /// Validates and stores a new definition.
    pub async fn define(&self, new: NewDefinition) -> Result<Definition> {
        validate::check_new_definition(&new, &self.inner.config.limits)?;
        let def = new.into_definition();
        self.inner.store.create_definition(&def).await?;
        Ok(def)
    }

    /// Applies a partial update on behalf of `actor`: only the
    /// definition's owner or an admin may (`Forbidden` otherwise).
    pub async fn update_definition(
        &self,
        definition_id: &str,
        update: DefinitionUpdate,
        actor: &Actor,
    ) -> Result<Definition> {
        validate::check_definition_update(&update, &self.inner.config.limits)?;
        let mut def = self.inner.store.get_definition(definition_id).await?;
        check_may_change(&def, actor, "update")?;
        update.apply(&mut def);
        self.inner.store.update_definition(&def).await?;
        Ok(def)
    }

    /// Deletes a definition on behalf of `actor` (its owner or an admin);
    /// its runs stay and queued ones still run.
    pub async fn delete_definition(&self, definition_id: &str, actor: &Actor) -> Result<()> {
        let def = self.inner.store.get_definition(definition_id).await?;
        check_may_change(&def, actor, "delete")?;
        self.inner.store.delete_definition(definition_id).await
    }

    /// A definition by id.
    pub async fn get_definition(&self, definition_id: &str) -> Result<Definition> {
        self.inner.store.get_definition(definition_id).await
    }

    /// A definition by alias.
    pub async fn get_definition_by_alias(&self, alias: &str) -> Result<Definition> {
        self.inner.store.get_definition_by_alias(alias).await
    }

    /// Lists definitions; `limit` is capped by `limits.max_page`.
    pub async fn list_definitions(&self, mut query: DefinitionQuery) -> Result<Page<Definition>> {
        query.limit = self.limit(query.limit);
        self.inner.store.list_definitions(&query).await
    }

    /// Distinct groups.
    pub async fn list_groups(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        self.inner
            .store
            .list_groups(name_contains, self.limit(limit), offset)
            .await
    }

    /// Distinct tags.
    pub async fn list_tags(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        self.inner
            .store
            .list_tags(name_contains, self.limit(limit), offset)
            .await
    }
}

/// `Forbidden` unless `actor` owns `def` or is an admin.
fn check_may_change(def: &Definition, actor: &Actor, action: &str) -> Result<()> {
    if actor.may_change(&def.owner) {
        return Ok(());
    }
    let owner = if def.owner.is_empty() {
        "it has no recorded owner, so only an admin may".to_string()
    } else {
        format!("only its owner '{}' or an admin may", def.owner)
    };
    Err(Error::forbidden(format!(
        "forbidden: '{}' may not {action} definition '{}': {owner}",
        actor.name, def.alias
    )))
}
