//! The OpenAPI document the node serves at `/api/openapi.json`: what
//! poem-openapi generates, completed with what it cannot say, and rewritten
//! where client generators misread it.
//!
//! poem-openapi wraps every `$ref` that carries a description as
//! `allOf: [{$ref}, {description}]` and puts `nullable` beside that `allOf`.
//! Generators such as `openapi-python-client` cannot read the wrapper (they
//! dropped `createTask` and the `Task` model over it), and OpenAPI 3.0 gives
//! `nullable` no meaning in a schema without a `type`. [`plain_refs`] turns
//! each wrapper into a plain `$ref`, or, where null is allowed, into
//! `anyOf: [{$ref}, <null>]` with a null branch 3.0 understands. The test
//! command generates a Python client from the live document and fails on any
//! generator warning (`scripts/dev`).

use serde_json::{Map, Value, json};

pub use crate::ids::IDENT_PATTERN;

/// Request bodies that refuse unknown fields (`deny_unknown_fields`).
const CLOSED_SCHEMAS: [&str; 9] = [
    "CreateTaskRequest",
    "BatchCreateRequest",
    "ClaimRequest",
    "StartRequest",
    "HeartbeatRequest",
    "CompleteRequest",
    "FailRequest",
    "AgentInput",
    "TaskMetrics",
];

/// Keys of a schema that only annotate it (they change no validation).
const ANNOTATIONS: [&str; 3] = ["description", "title", "example"];

/// The OpenAPI document of the REST API (JSON), as served at
/// `/api/openapi.json`.
pub fn spec_json() -> String {
    let spec = super::openapi().spec();
    match serde_json::from_str::<Value>(&spec) {
        Ok(mut v) => {
            complete_spec(&mut v);
            plain_refs(&mut v);
            v.to_string()
        }
        Err(_) => spec,
    }
}

/// What poem-openapi cannot say itself: closed request bodies
/// (`additionalProperties: false`), and the limits of a task to create, which
/// the queue checks item by item (so a refused batch names each bad item)
/// rather than the body parser.
fn complete_spec(spec: &mut Value) {
    let schemas = &mut spec["components"]["schemas"];
    for name in CLOSED_SCHEMAS {
        if let Some(schema) = schemas.get_mut(name).and_then(|s| s.as_object_mut()) {
            schema.insert("additionalProperties".into(), json!(false));
            // Optional fields accept an explicit null (read as absent).
            let required: Vec<String> = schema
                .get("required")
                .and_then(|r| r.as_array())
                .map(|r| {
                    r.iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
                for (field, prop) in props.iter_mut() {
                    if !required.contains(field)
                        && let Some(prop) = prop.as_object_mut()
                    {
                        prop.insert("nullable".into(), json!(true));
                    }
                }
            }
        }
    }
    let limits = crate::task::Limits::default();
    let ident = json!({"pattern": IDENT_PATTERN, "minLength": 1, "maxLength": limits.max_id_len});
    let props = &mut schemas["CreateTaskRequest"]["properties"];
    let constraints = [
        ("agentId", ident.clone()),
        ("taskType", ident.clone()),
        ("idempotencyKey", ident),
        (
            "maxRetries",
            json!({"minimum": 0, "maximum": limits.max_retries}),
        ),
        (
            "timeoutMs",
            json!({"minimum": 1, "maximum": limits.max_timeout_ms}),
        ),
        ("estimatedCost", json!({"minimum": 0, "maximum": 1e15})),
        (
            "runAt",
            json!({"minimum": 0, "maximum": crate::task::MAX_RUN_AT_MS}),
        ),
    ];
    for (field, extra) in constraints {
        if let (Some(p), Some(extra)) = (
            props.get_mut(field).and_then(|p| p.as_object_mut()),
            extra.as_object(),
        ) {
            for (k, v) in extra {
                p.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Rewrites every described reference, wherever it sits in the document:
///
/// - `{allOf: [{$ref: R}, {description}], description}` becomes `{$ref: R}`
///   (OpenAPI 3.0 ignores anything beside a `$ref`, so the description goes;
///   the referenced schema keeps its own);
/// - with `nullable: true` it becomes `{anyOf: [{$ref: R}, {type: T,
///   nullable: true, enum: [null]}], description}`: R or null, where T is R's
///   type (a `nullable` needs a `type` beside it in 3.0, and `enum: [null]`
///   keeps the branch to null alone).
///
/// A wrapper with anything else beside it (a default, a bound) is left as it
/// is, so nothing that validates is lost.
fn plain_refs(spec: &mut Value) {
    let types = component_types(spec);
    rewrite_schemas(spec, &types);
}

/// The `type` of each component schema that has one, by `$ref` path.
fn component_types(spec: &Value) -> Map<String, Value> {
    spec["components"]["schemas"]
        .as_object()
        .map(|schemas| {
            schemas
                .iter()
                .filter_map(|(name, schema)| {
                    let ty = schema.get("type")?.clone();
                    Some((format!("#/components/schemas/{name}"), ty))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rewrite_schemas(node: &mut Value, types: &Map<String, Value>) {
    match node {
        Value::Object(map) => {
            if let Some(replacement) = unwrap_described_ref(map, types) {
                *node = replacement;
                return;
            }
            for child in map.values_mut() {
                rewrite_schemas(child, types);
            }
        }
        Value::Array(items) => {
            for child in items {
                rewrite_schemas(child, types);
            }
        }
        _ => {}
    }
}

/// The replacement of one `allOf` wrapper around a single `$ref`, or None
/// when `map` is not such a wrapper.
fn unwrap_described_ref(map: &Map<String, Value>, types: &Map<String, Value>) -> Option<Value> {
    let all_of = map.get("allOf")?.as_array()?;
    let mut target = None;
    for part in all_of {
        let part = part.as_object()?;
        match part.get("$ref") {
            Some(r) if part.len() == 1 && target.is_none() => target = Some(r.clone()),
            Some(_) => return None,
            None if part.keys().all(|k| ANNOTATIONS.contains(&k.as_str())) => {}
            None => return None,
        }
    }
    let target = target?;
    let nullable = match map.get("nullable") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return None,
    };
    if !map
        .keys()
        .all(|k| k == "allOf" || k == "nullable" || ANNOTATIONS.contains(&k.as_str()))
    {
        return None;
    }
    let reference = json!({ "$ref": target });
    if !nullable {
        return Some(reference);
    }
    let ty = target
        .as_str()
        .and_then(|path| types.get(path))
        .cloned()
        .unwrap_or_else(|| json!("object"));
    let mut out = Map::new();
    for key in ANNOTATIONS {
        if let Some(v) = map.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    out.insert(
        "anyOf".into(),
        json!([reference, {"type": ty, "nullable": true, "enum": [null]}]),
    );
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(p)) = m.get("pattern") {
                    out.push((
                        p.clone(),
                        m.get("maxLength").cloned().unwrap_or(Value::Null),
                    ));
                }
                m.values().for_each(|v| patterns(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| patterns(v, out)),
            _ => {}
        }
    }

    /// poem-openapi takes validator patterns as literals only; this holds
    /// every literal to the rules of `crate::ids`.
    #[test]
    fn every_pattern_in_the_served_spec_is_an_id_rule() {
        let spec: Value = serde_json::from_str(&spec_json()).unwrap();
        let mut found = Vec::new();
        patterns(&spec, &mut found);
        assert!(found.len() >= 10, "{found:?}");
        let max = json!(crate::task::DEFAULT_MAX_ID_LEN);
        for (pattern, max_len) in found {
            match pattern.as_str() {
                crate::ids::IDENT_PATTERN | crate::ids::OWNER_PATTERN => {
                    assert_eq!(max_len, max, "{pattern}")
                }
                // A list cursor: a score, digits only.
                r"^[0-9]+$" => assert_eq!(max_len, json!(19)),
                other => panic!("a pattern that no id rule states: {other}"),
            }
        }
    }

    fn spec_with(prop: Value) -> Value {
        json!({"components": {"schemas": {
            "Priority": {"type": "string", "enum": ["HIGH", "LOW"]},
            "Body": {"type": "object", "properties": {"p": prop}},
        }}})
    }

    #[test]
    fn a_described_ref_becomes_a_plain_ref() {
        let mut spec = spec_with(json!({
            "allOf": [{"$ref": "#/components/schemas/Priority"}, {"description": "P."}],
            "description": "P.",
        }));
        plain_refs(&mut spec);
        assert_eq!(
            spec["components"]["schemas"]["Body"]["properties"]["p"],
            json!({"$ref": "#/components/schemas/Priority"})
        );
    }

    #[test]
    fn a_nullable_described_ref_becomes_the_ref_or_null() {
        let mut spec = spec_with(json!({
            "allOf": [{"$ref": "#/components/schemas/Priority"}, {"description": "P."}],
            "description": "P.",
            "nullable": true,
        }));
        plain_refs(&mut spec);
        assert_eq!(
            spec["components"]["schemas"]["Body"]["properties"]["p"],
            json!({
                "description": "P.",
                "anyOf": [
                    {"$ref": "#/components/schemas/Priority"},
                    {"type": "string", "nullable": true, "enum": [null]},
                ],
            })
        );
    }

    #[test]
    fn a_wrapper_with_constraints_beside_it_is_kept() {
        let wrapper = json!({
            "allOf": [{"$ref": "#/components/schemas/Priority"}, {"description": "P."}],
            "default": "LOW",
        });
        let mut spec = spec_with(wrapper.clone());
        plain_refs(&mut spec);
        assert_eq!(
            spec["components"]["schemas"]["Body"]["properties"]["p"],
            wrapper
        );
    }
}
