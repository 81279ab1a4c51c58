//! The list query over templates.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::SortOrder;
use crate::error::{Error, Result};

/// Fields templates can be sorted by (the whitelist). Each sorts by the
/// other next, in the same direction, so the order is total ((name,
/// version) is unique).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSortField {
    /// Name, then version.
    #[default]
    TemplateName,
    /// Version, then name.
    Version,
}

impl TemplateSortField {
    /// The API name (also the column SQL stores order by).
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateSortField::TemplateName => "template_name",
            TemplateSortField::Version => "version",
        }
    }

    /// The SQL `ORDER BY` list for `order`: the field, then the other one.
    pub fn order_by(self, order: SortOrder) -> String {
        let dir = match order {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        match self {
            TemplateSortField::TemplateName => format!("template_name {dir}, version {dir}"),
            TemplateSortField::Version => format!("version {dir}, template_name {dir}"),
        }
    }
}

impl FromStr for TemplateSortField {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "template_name" => Ok(TemplateSortField::TemplateName),
            "version" => Ok(TemplateSortField::Version),
            _ => Err(Error::invalid(format!(
                "sort_by: '{s}' is not sortable (expected template_name or version)"
            ))),
        }
    }
}

/// A list query over templates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TemplateQuery {
    /// Only the latest version of each name.
    pub latest_only: bool,
    /// Name equals this (every version of one template).
    pub template_name: Option<String>,
    /// Sort field.
    pub sort_by: TemplateSortField,
    /// Sort direction.
    pub order: SortOrder,
    /// Page size; 0 means no limit.
    pub limit: usize,
    /// Rows to skip.
    pub offset: usize,
}
