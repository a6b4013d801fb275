//! `routes[].messages`: the route's message rules, with its schema read and compiled now (a
//! relative path is read from the configuration file's directory), so a missing or invalid
//! schema is reported by `wsgate check` and refuses a reload.

use serde_saphyr::Spanned;

use super::Validator;
use crate::config::raw;
use crate::config::scalars::{max_depth, message_binary, message_text, on_invalid};
use crate::messages::{DEFAULT_MAX_DEPTH, Rules, Schema, Text};

impl Validator<'_> {
    pub(super) fn messages(&mut self, path: &str, messages: &Spanned<raw::Messages>) -> Rules {
        let m = &messages.value;
        let field = |name: &str| format!("{path}.{name}");
        let defaults = Rules::default();
        let text = self.optional(&field("text"), &m.text, defaults.text, message_text);
        let schema = m.schema.as_ref().and_then(|scalar| {
            let base = self.base;
            let schema = self.value(&field("schema"), scalar, |file| {
                Schema::load(&base.join(file))
            })?;
            if text != Text::Json {
                let message = "a schema needs `text: json` (text messages are not JSON otherwise)";
                self.fail(&field("schema"), &scalar.referenced, message);
            }
            Some(schema)
        });
        Rules {
            text,
            binary: self.optional(&field("binary"), &m.binary, defaults.binary, message_binary),
            max_depth: self.optional(
                &field("max_depth"),
                &m.max_depth,
                DEFAULT_MAX_DEPTH,
                max_depth,
            ),
            schema,
            on_invalid: self.optional(
                &field("on_invalid"),
                &m.on_invalid,
                defaults.on_invalid,
                on_invalid,
            ),
        }
    }
}
