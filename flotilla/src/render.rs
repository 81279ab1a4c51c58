//! Rendering a template: the payload checked against the template's JSON
//! Schema, then its command rendered from Go text/template syntax.
//!
//! flotilla-os renders with Go's `text/template` and the sprig function
//! library over the payload decoded by `encoding/json`; templates written
//! for it render the same here ([`gtmpl`] implements the syntax and Go's
//! builtins, [`sprig`] the commonly used sprig functions). One difference:
//! Go decodes every JSON number as a float and prints large whole numbers
//! in exponent form (`1e+06`); here they print as written (`1000000`).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

mod sprig;

/// Most schema violations one error message lists.
const MAX_LISTED_ERRORS: usize = 20;

/// Checks that `schema` is a JSON Schema the validator accepts (`schema:
/// ...` otherwise). Remote and file `$ref`s are not resolved.
pub fn check_schema(schema: &Map<String, Value>) -> Result<()> {
    let schema = Value::Object(schema.clone());
    jsonschema::validator_for(&schema)
        .map(|_| ())
        .map_err(|e| Error::invalid(format!("schema: not a valid JSON Schema: {e}")))
}

/// Checks `payload` against `schema`. Every violation is listed (up to
/// [`MAX_LISTED_ERRORS`]) as `template_payload.<path>: <message>`, the path
/// naming the field (a missing required field names that field), joined
/// with `; `.
pub fn validate_payload(schema: &Map<String, Value>, payload: &Map<String, Value>) -> Result<()> {
    let schema = Value::Object(schema.clone());
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| Error::invalid(format!("schema: not a valid JSON Schema: {e}")))?;
    let instance = Value::Object(payload.clone());
    let mut problems = Vec::new();
    let mut count = 0usize;
    for error in validator.iter_errors(&instance) {
        count += 1;
        if problems.len() >= MAX_LISTED_ERRORS {
            continue;
        }
        let mut path = String::from("template_payload");
        for segment in error.instance_path().iter() {
            path.push('.');
            path.push_str(&segment.to_string());
        }
        if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
            path.push('.');
            path.push_str(property.as_str().unwrap_or_default());
        }
        problems.push(format!("{path}: {error}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    if count > problems.len() {
        problems.push(format!("and {} more", count - problems.len()));
    }
    Err(Error::invalid(problems.join("; ")))
}

/// Most nested blocks (`if`, `range`, `with`, chained `else if`) and
/// parentheses a command template may have: parsing and rendering recurse
/// once per level, and must stay far from the end of a thread's stack.
const MAX_NESTING: usize = 32;

/// Refuses what would let a stored template exhaust the server's stack:
/// `template`, `define` and `block` actions (a template calling itself
/// recurses up to 100,000 levels deep in gtmpl, as in Go, whose stacks
/// grow), and nesting deeper than [`MAX_NESTING`]. A lexical check: every
/// action starts after `{{` (and an optional `-`), so nothing is missed; a
/// `{{` or parenthesis inside a string only ever refuses more.
fn check_structure(text: &str) -> Result<()> {
    let too_deep = || {
        Error::invalid(format!(
            "command_template: nested deeper than {MAX_NESTING} levels"
        ))
    };
    let mut depth = 0usize;
    let mut chained = 0usize;
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        let action = after[..end].trim_start_matches('-').trim_start();
        let mut words = action.split(|c: char| !c.is_ascii_alphabetic());
        match words.next().unwrap_or_default() {
            w @ ("template" | "define" | "block") => {
                return Err(Error::invalid(format!(
                    "command_template: {{{{{w} ...}}}} is not supported (a command template may not define or call templates)"
                )));
            }
            "if" | "range" | "with" => depth += 1,
            "else" if matches!(words.find(|w| !w.is_empty()), Some("if" | "with")) => chained += 1,
            "end" => depth = depth.saturating_sub(1),
            _ => {}
        }
        let mut parens = 0usize;
        for c in action.chars() {
            match c {
                '(' => parens += 1,
                ')' => parens = parens.saturating_sub(1),
                _ => {}
            }
            if parens > MAX_NESTING {
                return Err(too_deep());
            }
        }
        if depth + chained > MAX_NESTING {
            return Err(too_deep());
        }
        rest = &after[end..];
    }
    Ok(())
}

fn parse(command_template: &str) -> Result<gtmpl::Template> {
    check_structure(command_template)?;
    let mut t = gtmpl::Template::default();
    t.add_funcs(sprig::FUNCS);
    t.parse(command_template)
        .map_err(|e| Error::invalid(format!("command_template: {e}")))?;
    Ok(t)
}

/// Checks that `command_template` parses (`command_template: ...`
/// otherwise), so a broken template is refused when it is stored, not when
/// it is run.
pub fn check_command_template(command_template: &str) -> Result<()> {
    parse(command_template).map(|_| ())
}

/// Renders `command_template` with `payload` as `.`. A failure (a function
/// given the wrong type, a missing template) is `InvalidInput` naming
/// `command_template`.
pub fn render_command(command_template: &str, payload: &Map<String, Value>) -> Result<String> {
    let t = parse(command_template)?;
    let context = gtmpl::Context::from(to_gtmpl(&Value::Object(payload.clone())));
    t.render(&context)
        .map_err(|e| Error::invalid(format!("command_template: rendering failed: {e}")))
}

/// A JSON value as a template value: objects become maps (`.key` and
/// `index` work on them), integers stay integers.
pub(crate) fn to_gtmpl(v: &Value) -> gtmpl::Value {
    match v {
        Value::Null => gtmpl::Value::Nil,
        Value::Bool(b) => gtmpl::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                gtmpl::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                gtmpl::Value::from(u)
            } else {
                gtmpl::Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => gtmpl::Value::String(s.clone()),
        Value::Array(a) => gtmpl::Value::Array(a.iter().map(to_gtmpl).collect()),
        Value::Object(o) => {
            gtmpl::Value::Map(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fields_and_go_builtins_render_as_go_does() {
        let p =
            obj(json!({"name": "world", "n": 3, "ratio": 2.5, "items": ["a", "b"], "on": true}));
        let out = render_command(
            "echo {{.name}} {{.n}} {{.ratio}} {{index .items 1}} {{if .on}}yes{{else}}no{{end}} {{len .items}} {{printf \"%s-%d\" .name 7}} {{.missing}}",
            &p,
        )
        .expect("render");
        // Go: `echo world 3 2.5 b yes 2 world-7 <no value>`.
        assert_eq!(out, "echo world 3 2.5 b yes 2 world-7 <no value>");
    }

    #[test]
    fn range_over_a_list_renders_each_item() {
        let p = obj(json!({"files": ["x.csv", "y.csv"]}));
        let out = render_command("{{range .files}}cat {{.}}; {{end}}", &p).expect("render");
        assert_eq!(out, "cat x.csv; cat y.csv; ");
    }

    #[test]
    fn a_broken_template_is_refused_naming_the_field() {
        let e = check_command_template("echo {{.name").expect_err("unclosed");
        assert!(
            e.message().starts_with("command_template:"),
            "{}",
            e.message()
        );
        let e = check_command_template("echo {{ nosuchfunc .name }}").expect_err("unknown func");
        assert!(
            e.message().starts_with("command_template:"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn templates_that_could_exhaust_the_stack_are_refused() {
        let recursive = r#"{{define "a"}}{{template "a"}}{{end}}{{template "a"}}"#;
        let own = r#"echo {{- template "" }}"#;
        let block = r#"{{block "b" .}}x{{end}}"#;
        let deep_if = format!("{}x{}", "{{if .a}}".repeat(40), "{{end}}".repeat(40));
        let deep_else = format!("{{{{if .a}}}}{}{{{{end}}}}", "{{else if .b}}".repeat(40));
        let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(40), ")".repeat(40));
        for bad in [recursive, own, block, &deep_if, &deep_else, &deep_parens] {
            let e = check_command_template(bad).expect_err(bad);
            assert!(
                e.message().starts_with("command_template:"),
                "{}",
                e.message()
            );
            let e = render_command(bad, &Map::new()).expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        }
        let fine = format!("{}x{}", "{{if .a}}".repeat(8), "{{end}}".repeat(8));
        assert!(check_command_template(&fine).is_ok());
        assert!(
            check_command_template("{{ if .a }}a{{ else if .b }}b{{ else }}c{{ end }}").is_ok()
        );
    }

    #[test]
    fn schema_errors_name_every_field() {
        let schema = obj(json!({
            "type": "object",
            "required": ["name", "count"],
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
                "opts": {"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]}}}
            }
        }));
        let e = validate_payload(&schema, &obj(json!({"count": 0, "opts": {"mode": "odd"}})))
            .expect_err("invalid");
        let m = e.message();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(m.contains("template_payload.name:"), "{m}");
        assert!(m.contains("template_payload.count:"), "{m}");
        assert!(m.contains("template_payload.opts.mode:"), "{m}");
        assert!(validate_payload(&schema, &obj(json!({"name": "a", "count": 2}))).is_ok());
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        let e = check_schema(&obj(json!({"type": "no-such-type"}))).expect_err("bad schema");
        assert!(e.message().starts_with("schema:"), "{}", e.message());
    }
}
