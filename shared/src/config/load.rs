//! Layering of configuration sources: defaults ← TOML file ← `STRATA__*` environment variables.
//!
//! All three become one TOML tree, which is then deserialized into [`Config`] with the path of
//! any failure kept, so an error names the key and the source that set it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::{Table, Value};

use super::{Config, ConfigError};

/// Environment variables starting with this prefix override keys: `STRATA__KAFKA__BROKERS`.
pub const ENV_PREFIX: &str = "STRATA__";

pub(super) fn from_sources(
    file: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut tree = match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => t,
        _ => unreachable!("the default configuration serializes to a table"),
    };
    let mut origins: HashMap<String, String> = HashMap::new();

    let file_origin = file.map(|(_, p)| p.to_owned());
    if let Some((text, path)) = file {
        let parsed: Table = toml::from_str(text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        merge(&mut tree, parsed);
    }

    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Key {
                key: path.join("."),
                origin: format!("environment variable {name}"),
                message: "empty key segment (use STRATA__SECTION__KEY)".into(),
            });
        }
        set_path(&mut tree, &path, &value);
        origins.insert(path.join("."), format!("environment variable {name}"));
    }

    let config: Config = serde_path_to_error::deserialize(Value::Table(tree)).map_err(|e| {
        let key = e.path().to_string();
        let origin = origins
            .iter()
            .find(|(k, _)| {
                key == **k || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}."))
            })
            .map(|(_, o)| o.clone())
            .or_else(|| file_origin.clone())
            .unwrap_or_else(|| "default".into());
        ConfigError::Key {
            key: if key == "." { String::new() } else { key },
            origin,
            message: e.into_inner().to_string(),
        }
    })?;
    config.validate().map_err(|e| match e {
        ConfigError::Key { key, message, .. } => {
            let origin = origins
                .get(&key)
                .cloned()
                .or_else(|| file_origin.clone())
                .unwrap_or_else(|| "default".into());
            ConfigError::Key {
                key,
                origin,
                message,
            }
        }
        other => other,
    })?;
    Ok(config)
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets `path` to the environment value. Where the current value is a string (or absent), the
/// text is taken as a string; otherwise it is parsed as a TOML value (`90`, `true`, `[1, 2]`).
fn set_path(tree: &mut Table, path: &[String], raw: &str) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut table = tree;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        table = entry.as_table_mut().expect("just made a table");
    }
    let value = match table.get(last) {
        None | Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(_) => parse_scalar(raw),
    };
    table.insert(last.clone(), value);
}

fn parse_scalar(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Deserializes a table of librdkafka options, accepting numbers and booleans as their text
/// (`"linger.ms" = 5` means `"5"`), since librdkafka takes every option as a string.
pub(super) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table of option names to strings, numbers or booleans")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, Value>()? {
                let text = match v {
                    Value::String(s) => s,
                    Value::Integer(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                    Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(de::Error::custom(format!(
                            "option {k:?} must be a string, number or boolean, not {}",
                            other.type_str()
                        )))
                    }
                };
                out.insert(k, text);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}
