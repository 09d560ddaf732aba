//! JSON Schema of the config's value types, for `junction schema`: what an
//! editor shows and checks while a user writes a config (the structs derive
//! theirs; these types parse from strings, so their schemas are written here).

use super::values::{ByteSize, Dur, KeySource, OneOrMany, Rate};

/// A string value with a pattern and a description, for editors.
fn string_schema(description: &str, pattern: &str, examples: &[&str]) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": pattern,
        "description": description,
        "examples": examples,
    })
}

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_schema(
            "A duration: a number and a unit (ms, s, m, h), e.g. 250ms, 3s, 5m, 24h",
            r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]+)*\s*$",
            &["250ms", "3s", "5m", "24h"],
        )
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes, or with a unit: 512KiB, 10MiB, 1GB",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]*\s*$" }
            ],
            "examples": ["64KiB", "10MiB"],
        })
    }
}

impl schemars::JsonSchema for Rate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rate".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_schema(
            "A rate: a count per unit of time, e.g. 50/s, 600/m",
            r"^\s*[0-9]+\s*/\s*[0-9]*\s*[a-zA-Z]+\s*$",
            &["50/s", "600/m"],
        )
    }
}

impl schemars::JsonSchema for KeySource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KeySource".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        string_schema(
            "Where a key comes from: header:NAME or json:/pointer",
            r"^(header:.+|json:/.*)$",
            &["header:x-order-id", "json:/orderId"],
        )
    }
}

impl schemars::JsonSchema for OneOrMany {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OneOrMany".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A name, or a list of names",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ],
        })
    }
}
