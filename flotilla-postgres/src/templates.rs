//! The template versions of a [`crate::PgStore`].

use flotilla::{Error, Page, Result, Template, TemplateQuery};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::doc::doc_of_row;
use crate::error::{check_text, conflict_as, from_sqlx};

fn template_from_row(row: &PgRow) -> Result<Template> {
    doc_of_row(row, "template")
}

pub(crate) async fn create(pool: &PgPool, t: &Template) -> Result<()> {
    check_text("template_id", &t.template_id)?;
    check_text("template_name", &t.template_name)?;
    check_text("command_template", &t.command_template)?;
    let doc = sqlx::types::Json(t);
    sqlx::query(
        "INSERT INTO templates (template_id, template_name, version, doc, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&t.template_id)
    .bind(&t.template_name)
    .bind(i64::from(t.version))
    .bind(doc)
    .bind(t.created_at)
    .execute(pool)
    .await
    .map_err(|e| {
        conflict_as(e, || {
            format!(
                "version: template '{}' already has version {} (or id {} is taken)",
                t.template_name, t.version, t.template_id
            )
        })
    })?;
    Ok(())
}

pub(crate) async fn get(pool: &PgPool, template_id: &str) -> Result<Template> {
    check_text("template_id", template_id)?;
    let row = sqlx::query("SELECT doc FROM templates WHERE template_id = $1")
        .bind(template_id)
        .fetch_optional(pool)
        .await
        .map_err(from_sqlx)?
        .ok_or_else(|| Error::not_found(format!("template '{template_id}' not found")))?;
    template_from_row(&row)
}

pub(crate) async fn get_by_name(
    pool: &PgPool,
    name: &str,
    version: Option<u32>,
) -> Result<Template> {
    check_text("template_name", name)?;
    let row = sqlx::query(
        "SELECT doc FROM templates WHERE template_name = $1 \
         AND ($2::bigint IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
    )
    .bind(name)
    .bind(version.map(i64::from))
    .fetch_optional(pool)
    .await
    .map_err(from_sqlx)?
    .ok_or_else(|| {
        Error::not_found(match version {
            Some(v) => format!("template '{name}' version {v} not found"),
            None => format!("template '{name}' not found"),
        })
    })?;
    template_from_row(&row)
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &TemplateQuery) {
    qb.push(" WHERE true");
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

pub(crate) async fn list(pool: &PgPool, q: &TemplateQuery) -> Result<Page<Template>> {
    if let Some(name) = &q.template_name {
        check_text("template_name", name)?;
    }
    let limit = match q.limit {
        0 => None,
        n => Some(i64::try_from(n).unwrap_or(i64::MAX)),
    };
    let offset = i64::try_from(q.offset).map_err(|_| Error::invalid("offset: too large"))?;
    let mut qb = QueryBuilder::<Postgres>::new("SELECT t.doc FROM templates t");
    push_filters(&mut qb, q);
    qb.push(" ORDER BY ")
        .push(q.sort_by.order_by(q.order))
        .push(" LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let rows = qb.build().fetch_all(pool).await.map_err(from_sqlx)?;
    let items = rows
        .iter()
        .map(template_from_row)
        .collect::<Result<Vec<_>>>()?;
    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM templates t");
    push_filters(&mut count, q);
    let total: i64 = count
        .build()
        .fetch_one(pool)
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
