//! The README's API table against the served OpenAPI document, so the two
//! cannot drift: every route the table names is served (with every query
//! parameter of a list and every body field of an execute it names), and
//! every served route is in the table.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

const METHODS: [&str; 4] = ["GET", "PUT", "POST", "DELETE"];

/// One row of the table: its routes and its description.
struct Row {
    routes: Vec<(String, String)>,
    what: String,
}

/// The backticked spans of `text`.
fn spans(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// `{anything}` → `{}`, so `{name}` and `{cluster_id}` compare equal.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

fn readme_rows() -> Vec<Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme.find("\n## HTTP API").expect("an HTTP API section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        // Split on the first unescaped `|` after the first cell.
        let body = &line[1..];
        let cut = body.find(" | ").expect("two cells");
        let (ops, what) = (&body[..cut], &body[cut + 3..]);
        let mut pending: Vec<String> = Vec::new();
        let mut routes = Vec::new();
        for span in spans(ops) {
            let mut words = span.split_whitespace();
            let method = words.next().unwrap_or_default().to_string();
            assert!(METHODS.contains(&method.as_str()), "{span} in {line}");
            match words.next() {
                None => pending.push(method),
                Some(path) => {
                    pending.push(method);
                    for m in pending.drain(..) {
                        routes.push((m, path.to_string()));
                    }
                }
            }
        }
        assert!(pending.is_empty(), "a method without a path in {line}");
        rows.push(Row {
            routes,
            what: what.trim_end_matches('|').trim().to_string(),
        });
    }
    assert!(rows.len() > 10, "the table was found");
    rows
}

/// The names a row's description gives as parameters: backticked spans
/// outside parentheses and before `→`, `=…` cut off.
fn named_parameters(what: &str) -> Vec<String> {
    let what = what.split('→').next().unwrap_or_default();
    let what = what.split(';').next().unwrap_or_default();
    let mut depth = 0usize;
    let mut outside = String::new();
    for c in what.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    spans(&outside)
        .into_iter()
        .map(|s| s.split('=').next().unwrap_or_default().to_string())
        .collect()
}

/// The document's path for a README path: absolute ones (`/api/...`, and
/// kubernetes-task-runner's `/batch/...`) as they are, the others under
/// `/api/v6`.
fn served_path(path: &str) -> String {
    if path.starts_with("/api/") || path.starts_with("/batch/") {
        path.to_string()
    } else {
        format!("/api/v6{path}")
    }
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let wanted = shape(path);
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .find(|(p, _)| shape(p) == wanted)
        .and_then(|(_, item)| item.get(method.to_ascii_lowercase()))
}

/// `name` among `object`'s properties, or those of the schemas it is
/// `allOf` (what a `#[serde(flatten)]` field becomes); `Null` when absent.
fn property<'a>(doc: &'a Value, object: &'a Value, name: &str) -> &'a Value {
    let own = &object["properties"][name];
    if !own.is_null() {
        return own;
    }
    for part in object["allOf"].as_array().into_iter().flatten() {
        let part = match part["$ref"].as_str() {
            Some(r) => schema(doc, r),
            None => part,
        };
        let found = property(doc, part, name);
        if !found.is_null() {
            return found;
        }
    }
    &Value::Null
}

fn schema<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let name = reference.rsplit('/').next().expect("a name");
    &doc["components"]["schemas"][name]
}

#[tokio::test]
async fn readme_api_table_matches_the_served_openapi_document() {
    let s = common::start().await;
    let (code, doc) = s
        .send(s.http.get(format!("{}/api/openapi.json", s.url)))
        .await;
    assert_eq!(code, 200);
    let rows = readme_rows();
    let mut covered = BTreeSet::new();
    for row in &rows {
        for (method, path) in &row.routes {
            // Served outside the API document.
            if path == "/metrics" || path == "/api/openapi.json" {
                continue;
            }
            let full = served_path(path);
            let op = operation(&doc, method, &full)
                .unwrap_or_else(|| panic!("README names {method} {path}, which is not served"));
            covered.insert((method.to_ascii_lowercase(), shape(&full)));
            let named = named_parameters(&row.what);
            if row.what.starts_with("list") && method == "GET" {
                let served: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                for name in &named {
                    assert!(
                        served.contains(name.as_str()),
                        "README: {method} {path} takes `{name}`, the server does not (it takes {served:?})"
                    );
                }
            }
            if row.what.starts_with("execute:") && method == "PUT" {
                let body = schema(
                    &doc,
                    op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{method} {path}: an untyped body")),
                );
                for name in &named {
                    let mut at = body;
                    for part in name.split('.') {
                        at = property(&doc, at, part);
                        if let Some(r) = at["$ref"].as_str() {
                            at = schema(&doc, r);
                        }
                        if let Some(r) = at["oneOf"]
                            .as_array()
                            .and_then(|v| v.iter().find_map(|s| s["$ref"].as_str()))
                        {
                            at = schema(&doc, r);
                        }
                    }
                    assert!(
                        !at.is_null(),
                        "README: {method} {path} takes `{name}`, its body schema does not"
                    );
                }
            }
        }
    }
    // Every served route of v6 and the older versions is in the table (v1
    // serves v6's handlers).
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if path.starts_with("/api/v1/") {
            continue;
        }
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_some() {
                assert!(
                    covered.contains(&(method.to_string(), shape(path))),
                    "{method} {path} is served but not in the README's API table"
                );
            }
        }
    }
    s.server.shutdown().await;
}

#[test]
fn the_table_parser_reads_shared_methods_and_parameters() {
    assert_eq!(
        named_parameters("list runs: `status` (repeatable, `x`), `env=N|V` → `{total}`"),
        vec!["status", "env"]
    );
    assert_eq!(shape("/clusters/{name}"), shape("/clusters/{cluster_id}"));
}
