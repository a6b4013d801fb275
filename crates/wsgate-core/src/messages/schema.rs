//! `messages.schema`: a JSON Schema (draft 2020-12) file, read and compiled when the
//! configuration is loaded, so a bad schema is a configuration error and never a surprise on
//! the hot path. Patterns compile with the `regex` engine (linear time), not a backtracking
//! one: the text they are matched against comes from clients.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;

/// A compiled schema and the file it came from.
pub struct Schema {
    path: PathBuf,
    validator: Validator,
}

impl Schema {
    /// Reads and compiles the schema at `path`; the error says what is wrong, for the
    /// configuration's report.
    pub fn load(path: &Path) -> Result<Schema, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let document: Value = serde_json::from_str(&text)
            .map_err(|error| format!("{} is not JSON: {error}", path.display()))?;
        let validator = jsonschema::draft202012::options()
            .with_pattern_options(PatternOptions::regex())
            .build(&document)
            .map_err(|error| {
                format!(
                    "{} is not a valid JSON Schema (draft 2020-12): {error}",
                    path.display()
                )
            })?;
        Ok(Schema {
            path: path.to_owned(),
            validator,
        })
    }

    /// Whether `value` satisfies the schema.
    pub fn accepts(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("path", &self.path).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write the schema");
        path
    }

    #[test]
    fn a_schema_compiles_and_judges() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = write(
            dir.path(),
            "chat.json",
            r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string","pattern":"^[a-z ]+$"}}}"#,
        );
        let schema = Schema::load(&path).expect("a valid schema");
        assert!(schema.accepts(&serde_json::json!({"text": "hello"})));
        assert!(!schema.accepts(&serde_json::json!({"text": 1})));
        assert!(!schema.accepts(&serde_json::json!({"text": "HELLO"})));
        assert!(!schema.accepts(&serde_json::json!([])));
    }

    #[test]
    fn a_bad_schema_says_why() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let missing = Schema::load(&dir.path().join("none.json")).expect_err("missing");
        assert!(missing.contains("cannot read"), "{missing}");
        let path = write(dir.path(), "text.json", "not json");
        let error = Schema::load(&path).expect_err("not JSON");
        assert!(error.contains("is not JSON"), "{error}");
        let path = write(dir.path(), "bad.json", r#"{"type": 12}"#);
        let error = Schema::load(&path).expect_err("invalid");
        assert!(error.contains("not a valid JSON Schema"), "{error}");
        let path = write(
            dir.path(),
            "remote.json",
            r#"{"$ref": "https://example.com/s.json"}"#,
        );
        let error = Schema::load(&path).expect_err("remote references are not fetched");
        assert!(error.contains("not a valid JSON Schema"), "{error}");
    }
}
