//! The sprig functions templates written for flotilla-os commonly use,
//! with sprig's argument order (the piped value comes last) and Go's
//! formatting: `default`, `empty`, `coalesce`, `upper`, `lower`, `title`,
//! `trim`, `trimPrefix`, `trimSuffix`, `contains`, `hasPrefix`,
//! `hasSuffix`, `replace`, `quote`, `squote`, `join`, `toJson`.
//! Go's builtins (`len`, `index`, `printf`, `eq`, `and`, ...) come with
//! gtmpl.

use std::fmt::Write as _;

use gtmpl::{Func, FuncError, Value};

/// The functions, by name.
pub(super) const FUNCS: &[(&str, Func)] = &[
    ("default", default as Func),
    ("empty", empty as Func),
    ("coalesce", coalesce as Func),
    ("upper", upper as Func),
    ("lower", lower as Func),
    ("title", title as Func),
    ("trim", trim as Func),
    ("trimPrefix", trim_prefix as Func),
    ("trimSuffix", trim_suffix as Func),
    ("contains", contains as Func),
    ("hasPrefix", has_prefix as Func),
    ("hasSuffix", has_suffix as Func),
    ("replace", replace as Func),
    ("quote", quote as Func),
    ("squote", squote as Func),
    ("join", join as Func),
    ("toJson", to_json as Func),
];

fn exactly<'a>(name: &str, args: &'a [Value], n: usize) -> Result<&'a [Value], FuncError> {
    if args.len() == n {
        Ok(args)
    } else {
        Err(FuncError::ExactlyXArgs(name.into(), n))
    }
}

/// A string argument; Go refuses other types the same way.
fn string_arg<'a>(name: &str, v: &'a Value) -> Result<&'a str, FuncError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(FuncError::Generic(format!(
            "{name}: wrong type for value; expected string; got {}",
            go_type(other)
        ))),
    }
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::NoValue | Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Number(_) => "float64",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) | Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

/// sprig's `empty`: nil, false, 0, "" and empty collections.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64().is_none_or(|f| f == 0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) | Value::Map(m) => m.is_empty(),
        Value::Function(_) => false,
    }
}

/// Writes `items` between `open` and `close`, `sep` between them.
fn write_joined<T>(
    out: &mut String,
    open: &str,
    sep: char,
    close: &str,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    out.push_str(open);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        each(out, item);
    }
    out.push_str(close);
}

/// A map's entries by key, as Go prints and marshals maps.
fn sorted(m: &std::collections::HashMap<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// Go's `fmt.Sprint` of a JSON-decoded value (sprig's `strval`).
fn strval(v: &Value) -> String {
    let mut out = String::new();
    write_go(&mut out, v);
    out
}

fn write_go(out: &mut String, v: &Value) {
    match v {
        Value::NoValue | Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => out.push_str(s),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Array(a) => write_joined(out, "[", ' ', "]", a, write_go),
        Value::Object(m) | Value::Map(m) => {
            write_joined(out, "map[", ' ', "]", sorted(m), |out, (k, v)| {
                out.push_str(k);
                out.push(':');
                write_go(out, v);
            });
        }
        Value::Function(_) => out.push_str("func"),
    }
}

fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [d] => Ok(d.clone()),
        [d, given] => Ok(if is_empty(given) {
            d.clone()
        } else {
            given.clone()
        }),
        _ => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}

fn empty(args: &[Value]) -> Result<Value, FuncError> {
    let a = exactly("empty", args, 1)?;
    Ok(Value::Bool(a.first().is_none_or(is_empty)))
}

fn coalesce(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args
        .iter()
        .find(|v| !is_empty(v))
        .cloned()
        .unwrap_or(Value::Nil))
}

fn map_string(name: &str, args: &[Value], f: fn(&str) -> String) -> Result<Value, FuncError> {
    let a = exactly(name, args, 1)?;
    let s = a.first().map(|v| string_arg(name, v)).transpose()?;
    Ok(Value::String(f(s.unwrap_or_default())))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    map_string("upper", args, str::to_uppercase)
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    map_string("lower", args, str::to_lowercase)
}

fn trim(args: &[Value]) -> Result<Value, FuncError> {
    map_string("trim", args, |s| s.trim().to_string())
}

/// Go's (deprecated, still sprig's) `strings.Title`: the first letter of
/// each word upper-cased.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    map_string("title", args, |s| {
        let mut out = String::with_capacity(s.len());
        let mut prev_letter = false;
        for c in s.chars() {
            if !prev_letter && c.is_alphabetic() {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
        }
        out
    })
}

/// Two string arguments, `(a, s)` as sprig orders them (`s` piped).
fn two<'a>(name: &str, args: &'a [Value]) -> Result<(&'a str, &'a str), FuncError> {
    match exactly(name, args, 2)? {
        [a, s] => Ok((string_arg(name, a)?, string_arg(name, s)?)),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 2)),
    }
}

fn trim_prefix(args: &[Value]) -> Result<Value, FuncError> {
    let (p, s) = two("trimPrefix", args)?;
    Ok(Value::String(s.strip_prefix(p).unwrap_or(s).to_string()))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    let (p, s) = two("trimSuffix", args)?;
    Ok(Value::String(s.strip_suffix(p).unwrap_or(s).to_string()))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    let (sub, s) = two("contains", args)?;
    Ok(Value::Bool(s.contains(sub)))
}

fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    let (p, s) = two("hasPrefix", args)?;
    Ok(Value::Bool(s.starts_with(p)))
}

fn has_suffix(args: &[Value]) -> Result<Value, FuncError> {
    let (p, s) = two("hasSuffix", args)?;
    Ok(Value::Bool(s.ends_with(p)))
}

fn replace(args: &[Value]) -> Result<Value, FuncError> {
    match exactly("replace", args, 3)? {
        [old, new, src] => Ok(Value::String(
            string_arg("replace", src)?
                .replace(string_arg("replace", old)?, string_arg("replace", new)?),
        )),
        _ => Err(FuncError::ExactlyXArgs("replace".into(), 3)),
    }
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| go_quote(&strval(v)))
        .collect();
    Ok(Value::String(parts.join(" ")))
}

fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| format!("'{}'", strval(v)))
        .collect();
    Ok(Value::String(parts.join(" ")))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    match exactly("join", args, 2)? {
        [sep, list] => {
            let sep = string_arg("join", sep)?;
            let items: Vec<String> = match list {
                Value::Nil | Value::NoValue => Vec::new(),
                Value::Array(a) => a
                    .iter()
                    .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
                    .map(strval)
                    .collect(),
                other => vec![strval(other)],
            };
            Ok(Value::String(items.join(sep)))
        }
        _ => Err(FuncError::ExactlyXArgs("join".into(), 2)),
    }
}

/// Go's `json.Marshal`: keys sorted, `<`, `>`, `&`, U+2028 and U+2029
/// escaped.
fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_json_string(out, s),
        Value::Array(a) => write_joined(out, "[", ',', "]", a, write_json),
        Value::Object(m) | Value::Map(m) => {
            write_joined(out, "{", ',', "}", sorted(m), |out, (k, v)| {
                write_json_string(out, k);
                out.push(':');
                write_json(out, v);
            });
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn to_json(args: &[Value]) -> Result<Value, FuncError> {
    let a = exactly("toJson", args, 1)?;
    let mut out = String::new();
    if let Some(v) = a.first() {
        write_json(&mut out, v);
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value as Json, json};

    use super::super::render_command;

    fn render(t: &str, p: &Json) -> Result<String, crate::Error> {
        let p: Map<String, Json> = p.as_object().cloned().unwrap_or_default();
        render_command(t, &p)
    }

    // Each expected output is what Go's text/template with sprig prints
    // for the same template and payload.
    #[test]
    fn sprig_functions_render_as_go_with_sprig_does() {
        let p = json!({
            "name": "  Ada Lovelace ", "empty": "", "zero": 0, "list": ["a", 1, true],
            "obj": {"b": 1, "a": "<x&y>"}, "path": "s3://bucket/key.csv"
        });
        let cases = [
            (r#"{{ .missing | default "dflt" }}"#, "dflt"),
            (r#"{{ .empty | default "dflt" }}"#, "dflt"),
            (r#"{{ .zero | default 5 }}"#, "5"),
            (r#"{{ .path | default "x" }}"#, "s3://bucket/key.csv"),
            (r#"{{ empty .empty }} {{ empty .path }}"#, "true false"),
            (r#"{{ coalesce .empty .missing "c" }}"#, "c"),
            (r#"{{ .name | trim | upper }}"#, "ADA LOVELACE"),
            (r#"{{ .name | trim | lower }}"#, "ada lovelace"),
            (r#"{{ "hello wide world" | title }}"#, "Hello Wide World"),
            (r#"{{ .path | trimPrefix "s3://" }}"#, "bucket/key.csv"),
            (r#"{{ .path | trimSuffix ".csv" }}"#, "s3://bucket/key"),
            (
                r#"{{ contains "bucket" .path }} {{ hasPrefix "s3" .path }} {{ hasSuffix ".tsv" .path }}"#,
                "true true false",
            ),
            (r#"{{ .path | replace "/" "_" }}"#, "s3:__bucket_key.csv"),
            (r#"{{ quote .name "a\"b" }}"#, r#""  Ada Lovelace " "a\"b""#),
            (r#"{{ "tab\there\n" | quote }}"#, r#""tab\there\n""#),
            (r#"{{ squote .path }}"#, "'s3://bucket/key.csv'"),
            (r#"{{ join "," .list }}"#, "a,1,true"),
            (
                r#"{{ toJson .obj }}"#,
                r#"{"a":"\u003cx\u0026y\u003e","b":1}"#,
            ),
            (r#"{{ toJson .list }}"#, r#"["a",1,true]"#),
        ];
        for (t, want) in cases {
            let got = render(t, &p).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(got, want, "template {t}");
        }
    }

    #[test]
    fn a_string_function_given_a_number_fails_like_go() {
        let e = render("{{ upper .n }}", &json!({"n": 3})).expect_err("number to upper");
        assert!(e.message().contains("expected string"), "{}", e.message());
    }
}
