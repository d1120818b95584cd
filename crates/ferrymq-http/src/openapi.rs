//! `/api/openapi.json`: an OpenAPI 3 description built from the route table the
//! router itself is built from, so every served path is documented.

use crate::route_docs;
use axum::Json;
use serde_json::{json, Map, Value};

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in route_docs() {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut ops = Map::new();
        for m in r.methods {
            let mut responses = Map::new();
            let ok = match *m {
                "GET" => "200",
                "PUT" => "201",
                "POST" => "200",
                _ => "204",
            };
            responses.insert(ok.into(), json!({"description": "success"}));
            for (code, what) in [
                ("400", "bad request"),
                ("401", "not authenticated"),
                ("403", "not allowed"),
                ("404", "not found"),
            ] {
                responses.insert(code.into(), json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
            }
            let mut op = json!({
                "summary": r.summary,
                "operationId": format!("{}_{}", m.to_lowercase(), r.path.trim_start_matches('/').replace(['/', '{', '}', '-', '.'], "_")),
                "parameters": params,
                "responses": responses,
            });
            if matches!(*m, "PUT" | "POST") {
                op["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
            }
            ops.insert(m.to_lowercase(), op);
        }
        paths.insert(r.path.into(), Value::Object(ops));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "FerryMQ management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "RabbitMQ-compatible management HTTP API of FerryMQ. Vhost '/' is written %2F. Authentication: HTTP basic.",
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}, "reason": {"type": "string"}}, "required": ["error", "reason"]}},
        },
        "security": [{"basic": []}],
        "paths": paths,
    })
}

/// `GET /api/openapi.json` (no authentication: it describes, it does not reveal).
pub async fn serve() -> Json<Value> {
    Json(document())
}
