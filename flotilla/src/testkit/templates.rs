//! The template part of the [`Store`] conformance suite.

use futures::future::join_all;
use serde_json::{Map, Value, json};

use super::{must, must_fail, token};
use crate::error::ErrorKind;
use crate::model::{EnvVar, NewTemplate, Template};
use crate::query::{SortOrder, TemplateQuery, TemplateSortField};
use crate::store::Store;

fn template(name: &str, version: u32) -> Template {
    let schema = match json!({"type": "object", "properties": {"who": {"type": "string"}}}) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut defaults = Map::new();
    defaults.insert("who".into(), json!("world \u{e9}'\""));
    NewTemplate {
        template_name: name.into(),
        schema,
        command_template: "echo hello {{.who}}".into(),
        defaults,
        image: "alpine:3.20".into(),
        memory: Some(256),
        cpu: Some(250),
        env: vec![EnvVar::new("MODE", "test")],
        ports: vec![8080],
        tags: vec!["suite".into()],
        owner: "suite".into(),
        ..Default::default()
    }
    .into_template(version)
}

fn names(page: &[Template]) -> Vec<(String, u32)> {
    page.iter()
        .map(|t| (t.template_name.clone(), t.version))
        .collect()
}

/// Every template rule of the [`Store`] contract.
pub(super) async fn templates(store: &dyn Store) {
    let prefix = format!("suite-tpl-{}", token());
    let a = format!("{prefix}-a");
    let b = format!("{prefix}-b");

    // Versions round-trip whole, by id and by name.
    let a1 = template(&a, 1);
    must(store.create_template(&a1).await, "create template");
    let got = must(store.get_template(&a1.template_id).await, "get template");
    assert_eq!(got, a1, "a template must round-trip unchanged");
    let mut a2 = template(&a, 2);
    a2.command_template = "echo v2 {{.who}}".into();
    must(store.create_template(&a2).await, "create version 2");
    assert_eq!(
        must(store.get_template_by_name(&a, None).await, "latest"),
        a2,
        "the latest version of a name must be its highest"
    );
    assert_eq!(
        must(store.get_template_by_name(&a, Some(1)).await, "version 1"),
        a1,
        "an older version must stay readable"
    );

    // (name, version) and ids are unique; unknowns are NotFound.
    must_fail(
        store.create_template(&template(&a, 2)).await,
        ErrorKind::Conflict,
        "a second version 2 of one name",
    );
    let mut same_id = template(&b, 1);
    same_id.template_id = a1.template_id.clone();
    must_fail(
        store.create_template(&same_id).await,
        ErrorKind::Conflict,
        "a reused template id",
    );
    must_fail(
        store.get_template("tpl-no-such-id").await,
        ErrorKind::NotFound,
        "unknown template id",
    );
    must_fail(
        store.get_template_by_name(&a, Some(9)).await,
        ErrorKind::NotFound,
        "unknown version",
    );
    must_fail(
        store
            .get_template_by_name(&format!("{prefix}-none"), None)
            .await,
        ErrorKind::NotFound,
        "unknown name",
    );
    must_fail(
        store.get_template("'; DROP TABLE templates; --").await,
        ErrorKind::NotFound,
        "a hostile id only matches nothing",
    );

    // Racing writers of one next version: exactly one wins.
    let racers: Vec<Template> = (0..8).map(|_| template(&a, 3)).collect();
    let results = join_all(racers.iter().map(|t| store.create_template(t))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one writer of version 3 must win");
    for r in results.into_iter().filter_map(|r| r.err()) {
        assert_eq!(
            r.kind(),
            ErrorKind::Conflict,
            "losers must see Conflict: {r}"
        );
    }

    for v in 1..=2 {
        must(store.create_template(&template(&b, v)).await, "create b");
    }

    // Lists: by name, latest only, both sorts, both orders, paging.
    let list = |q: TemplateQuery| async move { must(store.list_templates(&q).await, "list") };
    let of = |name: &str| TemplateQuery {
        template_name: Some(name.to_string()),
        ..Default::default()
    };
    let page = list(of(&a)).await;
    assert_eq!(page.total, 3, "every version of a name");
    assert_eq!(
        names(&page.items),
        vec![(a.clone(), 1), (a.clone(), 2), (a.clone(), 3)]
    );

    let all = list(TemplateQuery::default()).await;
    let ours: Vec<(String, u32)> = names(&all.items)
        .into_iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .collect();
    assert_eq!(
        ours,
        vec![
            (a.clone(), 1),
            (a.clone(), 2),
            (a.clone(), 3),
            (b.clone(), 1),
            (b.clone(), 2)
        ],
        "sorted by name then version"
    );

    let latest = list(TemplateQuery {
        latest_only: true,
        ..Default::default()
    })
    .await;
    let ours: Vec<(String, u32)> = names(&latest.items)
        .into_iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .collect();
    assert_eq!(ours, vec![(a.clone(), 3), (b.clone(), 2)], "latest_only");
    assert!(
        names(&latest.items).iter().all(|(n, _)| latest
            .items
            .iter()
            .filter(|t| &t.template_name == n)
            .count()
            == 1),
        "latest_only must give one version per name"
    );

    let by_version = list(TemplateQuery {
        template_name: Some(a.clone()),
        sort_by: TemplateSortField::Version,
        order: SortOrder::Desc,
        ..Default::default()
    })
    .await;
    assert_eq!(
        names(&by_version.items),
        vec![(a.clone(), 3), (a.clone(), 2), (a.clone(), 1)],
        "version desc"
    );
    let paged = list(TemplateQuery {
        template_name: Some(a.clone()),
        limit: 1,
        offset: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(paged.total, 3, "total counts every match, not the page");
    assert_eq!(names(&paged.items), vec![(a.clone(), 2)], "limit/offset");
    let hostile = list(of("%' OR '1'='1")).await;
    assert_eq!(hostile.total, 0, "a hostile name filter matches nothing");
}
