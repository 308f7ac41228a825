//! `docs/configuration.md` documents exactly the configuration's fields: the field table lists
//! every field the server accepts (dotted path) and no other, with the default the code uses.

use llmcm::config::Config;

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        // `[tls]` has no default: its two fields are absent.
        toml::Value::Table(t) if t.is_empty() && prefix == "tls" => {
            for field in ["tls.cert", "tls.key"] {
                out.push((field.to_owned(), toml::Value::Table(Default::default())));
            }
        }
        toml::Value::Table(t) if prefix != "auth.tokens" => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        // `auth.tokens` is an empty array by default, which serializes as nothing.
        toml::Value::Table(t) if t.is_empty() && prefix == "auth" => {
            out.push(("auth.tokens".to_owned(), toml::Value::Array(Vec::new())))
        }
        _ => out.push((prefix.to_owned(), value.clone())),
    }
}

#[test]
fn the_field_table_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let table = doc
        .split("<!-- fields:")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let documented: Vec<(String, String)> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect();
    let mut fields = Vec::new();
    flatten(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut fields,
    );
    let mut names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let mut doc_names: Vec<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
    doc_names.sort();
    assert_eq!(names, doc_names);
    for (name, value) in &fields {
        let (_, default) = documented.iter().find(|(n, _)| n == name).unwrap();
        let shown = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Table(_) | toml::Value::Array(_) => continue,
            other => other.to_string(),
        };
        assert!(
            default.starts_with(&format!("`{shown}`")),
            "{name}: code default {shown}, documented {default}"
        );
    }
}
