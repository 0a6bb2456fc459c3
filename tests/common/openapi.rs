//! The status server's contract, `schemas/openapi.yaml`, for tests that check real responses.

use serde_json::Value;

/// The `/api/v1/status` response schema of `schemas/openapi.yaml`, as a 2020-12 validator.
pub fn status_validator() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.yaml");
    let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&path).expect("schemas/openapi.yaml"))
        .expect("schemas/openapi.yaml is YAML");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "OpenAPI 3.1");
    for route in ["/healthz", "/readyz", "/metrics", "/api/v1/status"] {
        assert!(doc["paths"][route]["get"].is_object(), "openapi.yaml describes GET {route}");
    }
    let schema = &doc["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "the status response has a schema");
    // Its `#/components/...` refs resolve in a root that carries the document's components.
    let root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": doc["components"],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("the status schema compiles: {e}"))
}
