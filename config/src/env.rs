//! `REGISTRY_SECTION_KEY=value` environment overrides, as Distribution
//! has them: each sets one key of the file's tree before it is read, so an
//! override is checked like the file.

use serde_norway::Value;

use crate::error::{ConfigError, invalid};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "REGISTRY_";

/// The variable that names the configuration file, as in Distribution; it
/// has the overrides' prefix but is not one.
pub const CONFIGURATION_PATH_ENV: &str = "REGISTRY_CONFIGURATION_PATH";

/// Applies `REGISTRY_A_B_C=value` as `a.b.c: value` (all but
/// [`CONFIGURATION_PATH_ENV`]), returning each overridden dotted key with
/// the variable that set it.
pub(crate) fn apply_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIGURATION_PATH_ENV)
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let keys: Vec<String> = var[ENV_PREFIX.len()..]
            .split('_')
            .map(str::to_lowercase)
            .collect();
        if keys.iter().any(String::is_empty) {
            return Err(invalid(&var, "malformed override variable"));
        }
        let value: Value = serde_norway::from_str(&raw).unwrap_or(Value::String(raw.clone()));
        let value = if value.is_null() {
            Value::String(raw)
        } else {
            value
        };
        let mut node = &mut *tree;
        for (i, key) in keys.iter().enumerate() {
            let map = match node {
                Value::Mapping(m) => m,
                _ => {
                    return Err(invalid(
                        &keys[..i].join("."),
                        format!("cannot set {var}: not a section"),
                    ));
                }
            };
            let entry = map.entry(Value::String(key.clone())).or_insert(Value::Null);
            if i + 1 < keys.len() && entry.is_null() {
                *entry = Value::Mapping(Default::default());
            }
            node = entry;
        }
        *node = value;
        applied.push((keys.join("."), var));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::CONFIGURATION_PATH_ENV;
    use crate::test_support::{BASIC, error, parse};

    #[test]
    fn environment_overrides() {
        let s = parse(
            BASIC,
            &[
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
                ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(s.addr.port(), 6000);
        assert!(!s.delete_enabled);
        assert!(s.read_only);
        let err = error(BASIC, &[("REGISTRY_HTTP_ADR", "x")]);
        assert!(err.contains("REGISTRY_HTTP_ADR"), "{err}");
        // The variable naming the file is not an override.
        parse(
            BASIC,
            &[(CONFIGURATION_PATH_ENV, "/etc/registry/config.yml")],
        )
        .unwrap();
    }
}
