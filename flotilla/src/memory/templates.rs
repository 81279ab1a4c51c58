//! The template versions of a [`super::MemoryStore`], behind their own lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::model::Template;
use crate::query::{Page, SortOrder, TemplateQuery, TemplateSortField};

/// Template versions by id, and their ids by name and version.
#[derive(Debug, Default)]
pub(crate) struct TemplateTable {
    inner: RwLock<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    by_id: HashMap<String, Template>,
    /// name → version → id.
    by_name: BTreeMap<String, BTreeMap<u32, String>>,
}

impl TemplateTable {
    pub(crate) fn create(&self, t: &Template) -> Result<()> {
        let mut s = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if s.by_id.contains_key(&t.template_id) {
            return Err(Error::conflict(format!(
                "template_id: '{}' already exists",
                t.template_id
            )));
        }
        let versions = s.by_name.entry(t.template_name.clone()).or_default();
        if versions.contains_key(&t.version) {
            return Err(Error::conflict(format!(
                "version: template '{}' already has version {}",
                t.template_name, t.version
            )));
        }
        versions.insert(t.version, t.template_id.clone());
        s.by_id.insert(t.template_id.clone(), t.clone());
        Ok(())
    }

    pub(crate) fn get(&self, template_id: &str) -> Result<Template> {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        s.by_id
            .get(template_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("template '{template_id}' not found")))
    }

    pub(crate) fn get_by_name(&self, name: &str, version: Option<u32>) -> Result<Template> {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let versions = s.by_name.get(name);
        let id = match version {
            Some(v) => versions.and_then(|vs| vs.get(&v)),
            None => versions.and_then(|vs| vs.values().next_back()),
        };
        id.and_then(|id| s.by_id.get(id)).cloned().ok_or_else(|| {
            Error::not_found(match version {
                Some(v) => format!("template '{name}' version {v} not found"),
                None => format!("template '{name}' not found"),
            })
        })
    }

    pub(crate) fn list(&self, q: &TemplateQuery) -> Page<Template> {
        let s = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut items: Vec<&Template> = s
            .by_name
            .iter()
            .filter(|(name, _)| q.template_name.as_ref().is_none_or(|n| n == *name))
            .flat_map(|(_, versions)| {
                let skip = if q.latest_only {
                    versions.len().saturating_sub(1)
                } else {
                    0
                };
                versions.values().skip(skip)
            })
            .filter_map(|id| s.by_id.get(id))
            .collect();
        items.sort_by(|a, b| {
            let by_name = a.template_name.as_bytes().cmp(b.template_name.as_bytes());
            let by_version = a.version.cmp(&b.version);
            let o = match q.sort_by {
                TemplateSortField::TemplateName => by_name.then(by_version),
                TemplateSortField::Version => by_version.then(by_name),
            };
            match q.order {
                SortOrder::Asc => o,
                SortOrder::Desc => o.reverse(),
            }
        });
        let total = items.len() as u64;
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        Page {
            total,
            items: items
                .into_iter()
                .skip(q.offset)
                .take(limit)
                .cloned()
                .collect(),
            next_cursor: None,
        }
    }
}
