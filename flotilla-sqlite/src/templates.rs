//! The template versions of a [`crate::SqliteStore`].

use flotilla::{Error, Page, Result, Template, TemplateQuery};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::db::Db;
use crate::error::{check_text, conflict_as, from_json, from_sqlx};
use crate::time::nanos;

fn template_from_row(row: &SqliteRow) -> Result<Template> {
    let doc: String = row.try_get("doc").map_err(from_sqlx)?;
    serde_json::from_str(&doc).map_err(|e| from_json("template", e))
}

fn check_template(t: &Template) -> Result<()> {
    check_text("template_id", &t.template_id)?;
    check_text("template_name", &t.template_name)?;
    check_text("command_template", &t.command_template)
}

pub(crate) async fn create(db: &Db, t: &Template) -> Result<()> {
    check_template(t)?;
    let doc = serde_json::to_string(t)
        .map_err(|e| Error::internal(format!("template: cannot encode: {e}")))?;
    let created_at = nanos("created_at", t.created_at)?;
    let (id, name, version) = (t.template_id.clone(), t.template_name.clone(), t.version);
    db.writer
        .write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO templates (template_id, template_name, version, doc, created_at) \
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(&name)
                .bind(i64::from(version))
                .bind(&doc)
                .bind(created_at)
                .execute(&mut *c)
                .await
                .map_err(|e| {
                    conflict_as(e, || {
                        format!(
                            "version: template '{name}' already has version {version} (or id {id} is taken)"
                        )
                    })
                })?;
                Ok(())
            })
        })
        .await
}

pub(crate) async fn get(db: &Db, template_id: &str) -> Result<Template> {
    check_text("template_id", template_id)?;
    let row = sqlx::query("SELECT doc FROM templates WHERE template_id = ?")
        .bind(template_id)
        .fetch_optional(&db.read)
        .await
        .map_err(from_sqlx)?
        .ok_or_else(|| Error::not_found(format!("template '{template_id}' not found")))?;
    template_from_row(&row)
}

pub(crate) async fn get_by_name(db: &Db, name: &str, version: Option<u32>) -> Result<Template> {
    check_text("template_name", name)?;
    let row =
        match version {
            Some(v) => {
                sqlx::query("SELECT doc FROM templates WHERE template_name = ? AND version = ?")
                    .bind(name)
                    .bind(i64::from(v))
                    .fetch_optional(&db.read)
                    .await
            }
            None => sqlx::query(
                "SELECT doc FROM templates WHERE template_name = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(name)
            .fetch_optional(&db.read)
            .await,
        }
        .map_err(from_sqlx)?
        .ok_or_else(|| {
            Error::not_found(match version {
                Some(v) => format!("template '{name}' version {v} not found"),
                None => format!("template '{name}' not found"),
            })
        })?;
    template_from_row(&row)
}

fn push_filters(qb: &mut QueryBuilder<Sqlite>, q: &TemplateQuery) {
    qb.push(" WHERE 1 = 1");
    if let Some(name) = &q.template_name {
        qb.push(" AND t.template_name = ").push_bind(name.clone());
    }
    if q.latest_only {
        qb.push(
            " AND t.version = (SELECT max(l.version) FROM templates l \
             WHERE l.template_name = t.template_name)",
        );
    }
}

pub(crate) async fn list(db: &Db, q: &TemplateQuery) -> Result<Page<Template>> {
    if let Some(name) = &q.template_name {
        check_text("template_name", name)?;
    }
    let limit = match q.limit {
        0 => -1,
        n => i64::try_from(n).unwrap_or(i64::MAX),
    };
    let offset = i64::try_from(q.offset).map_err(|_| Error::invalid("offset: too large"))?;
    let mut qb = QueryBuilder::<Sqlite>::new("SELECT t.doc FROM templates t");
    push_filters(&mut qb, q);
    qb.push(" ORDER BY ")
        .push(q.sort_by.order_by(q.order))
        .push(" LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let rows = qb.build().fetch_all(&db.read).await.map_err(from_sqlx)?;
    let items = rows
        .iter()
        .map(template_from_row)
        .collect::<Result<Vec<_>>>()?;
    let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM templates t");
    push_filters(&mut count, q);
    let total: i64 = count
        .build()
        .fetch_one(&db.read)
        .await
        .map_err(from_sqlx)?
        .try_get(0)
        .map_err(from_sqlx)?;
    Ok(Page {
        total: u64::try_from(total).unwrap_or(0),
        items,
        next_cursor: None,
    })
}
