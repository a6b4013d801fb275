//! Duplicate member names in a token's JSON. serde_json keeps the last of two same-named
//! members while other parsers keep the first or refuse, and jsonwebtoken refuses twins only
//! among the claims it validates itself; so `{"scope":"read","scope":"admin"}` would be read
//! as `admin` here whatever the issuer meant. A token with twins anywhere is refused.

use std::collections::HashSet;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// True when no object in `json` names a member twice (names compared after unescaping).
/// Invalid JSON is false.
pub fn unique_members(json: &[u8]) -> bool {
    let mut parser = serde_json::Deserializer::from_slice(json);
    Unique.deserialize(&mut parser).is_ok() && parser.end().is_ok()
}

/// Walks any JSON value, failing on the first object with a repeated member name.
#[derive(Clone, Copy)]
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("JSON without repeated member names")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        let mut names = HashSet::new();
        while let Some(name) = members.next_key::<String>()? {
            if !names.insert(name) {
                return Err(de::Error::custom("repeated member name"));
            }
            members.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::unique_members;

    #[test]
    fn twins_are_found_at_any_depth_and_through_escapes() {
        assert!(unique_members(
            br#"{"a":1,"b":{"a":[{"a":1},{"a":2}]},"c":null}"#
        ));
        assert!(!unique_members(br#"{"exp":1,"exp":2}"#));
        assert!(!unique_members(br#"{"scope":"a","sc\u006fpe":"b"}"#));
        assert!(!unique_members(br#"{"a":{"b":1,"b":1}}"#));
        assert!(!unique_members(br#"{"a":[{"b":1,"b":1}]}"#));
        assert!(!unique_members(br#"{"a":1} trailing"#));
        assert!(!unique_members(b"{"));
    }
}
