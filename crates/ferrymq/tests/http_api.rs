//! The management API's route table against the server: every documented route and
//! method is served (the OpenAPI document is generated from that same table), and
//! errors are JSON with `error` and `reason`. The full behaviour of each path is
//! checked by the Python suite in tests/http, which also runs against RabbitMQ.

mod common;
use common::*;
use serde_json::json;

/// Sends a raw request as guest and returns (status, headers, body).
async fn raw(port: u16, method: &str, path: &str, body: &str) -> (u16, String, String) {
    raw_with(port, method, path, "", body).await
}

/// Like `raw`, with extra header lines (each ending in `\r\n`).
async fn raw_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), rest.to_string())
}

#[tokio::test]
async fn every_documented_route_is_served_and_documented_in_openapi() {
    let b = start().await;
    let port = b.http_port();
    let (code, doc) = http(port, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    let (status, head, _) = raw(port, "GET", "/api/no-such-route", "").await;
    assert_eq!(status, 404);
    assert!(
        head.contains("x-ferrymq-route: none"),
        "the fallback is recognisable"
    );
    let docs = ferrymq_http::route_docs();
    assert_eq!(paths.len(), docs.len());
    for r in &docs {
        let ops = paths[r.path].as_object().unwrap();
        assert_eq!(ops.len(), r.methods.len(), "{}", r.path);
        // Fill parameters with names that exist where it matters (vhost "/").
        let path = r
            .path
            .replace("{vhost}", "%2F")
            .replace("{node}", "nonode")
            .replace(['{', '}'], "");
        for m in r.methods {
            assert!(ops.contains_key(&m.to_lowercase()), "{m} {}", r.path);
            // Writes to these dummy names must not disturb the broker's own vhost.
            if *m == "DELETE" && path == "/api/vhosts/%2F" {
                continue;
            }
            let (status, head, _) = raw(port, m, &path, "{}").await;
            assert_ne!(status, 405, "{m} {path} not routed");
            assert!(
                !head.contains("x-ferrymq-route: none"),
                "{m} {path} fell through to the fallback"
            );
        }
    }
}

#[tokio::test]
async fn errors_are_json_with_reason() {
    let b = start().await;
    let port = b.http_port();
    let (code, body) = http(port, "GET", "/api/overview", None, None).await;
    assert_eq!(code, 401);
    assert!(body["reason"].is_string());
    let (code, body) = http(port, "GET", "/api/overview", None, Some(("guest", "wrong"))).await;
    assert_eq!(code, 401, "{body}");
    let (status, head, text) = raw(port, "PUT", "/api/queues/%2F/q", "{not json").await;
    assert_eq!(status, 400);
    assert!(head.contains("application/json"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "bad_request");
    let (code, body) = b.api("GET", "/api/queues/%2F/missing", None).await;
    assert_eq!(code, 404);
    assert!(body["reason"].is_string());
    let (code, _) = b.api("POST", "/api/overview", Some(json!({}))).await;
    assert_eq!(code, 405);
    let (code, body) = b
        .api(
            "PUT",
            "/api/policies/%2F/p",
            Some(json!({"pattern": "(", "definition": {"max-length": 1}})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(body["reason"].as_str().unwrap().contains("pattern"));
}

#[tokio::test]
async fn web_ui_is_served_and_cross_site_writes_are_refused() {
    let b = start().await;
    let port = b.http_port();
    let (status, head, page) = raw(port, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("/ui/app.js"), "{page}");
    let (status, head, js) = raw(port, "GET", "/ui/pages/federation.js", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"), "{head}");
    assert!(js.contains("/api/federation-links"));
    let (status, _, _) = raw(port, "GET", "/ui/nope.js", "").await;
    assert_eq!(status, 404);

    // A write carrying another site's Origin is refused and changes nothing.
    let evil = "Origin: http://evil.example\r\n";
    let (status, _, body) = raw_with(port, "PUT", "/api/vhosts/csrf", evil, "{}").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cross-origin"), "{body}");
    let (code, _) = b.api("GET", "/api/vhosts/csrf", None).await;
    assert_eq!(code, 404);
    // Reads, and writes from the UI's own origin, pass.
    let (status, _, _) = raw_with(port, "GET", "/api/vhosts", evil, "").await;
    assert_eq!(status, 200);
    let same = "Origin: http://x\r\n";
    let (status, _, _) = raw_with(port, "PUT", "/api/vhosts/same-site", same, "{}").await;
    assert_eq!(status, 201);

    // The UI's requests get no WWW-Authenticate, so browsers show no native prompt.
    let (code, _) = http(port, "GET", "/api/whoami", None, Some(("guest", "wrong"))).await;
    assert_eq!(code, 401);
    let bad = "X-Ferrymq-Ui: 1\r\nAuthorization: Basic Z3Vlc3Q6d3Jvbmc=\r\n";
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /api/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{bad}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("www-authenticate"),
        "{out}"
    );
}

#[tokio::test]
async fn metrics_show_queues_and_federation_links() {
    let b = start().await;
    let (code, _) = b
        .api(
            "PUT",
            "/api/queues/%2F/metered",
            Some(json!({"durable": true})),
        )
        .await;
    assert_eq!(code, 201);
    let (status, head, text) = raw(b.http_port(), "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"));
    assert!(
        text.contains("ferrymq_queue_messages_ready{vhost=\"/\",queue=\"metered\"} 0"),
        "{text}"
    );
    assert!(text.contains("# TYPE ferrymq_federation_link_up gauge"));
    assert!(text.contains("ferrymq_process_resident_memory_bytes"));
}

#[tokio::test]
async fn publish_and_get_keep_amqp_rules() {
    let b = start().await;
    let publish = |props: serde_json::Value| json!({"routing_key": "q", "payload": "x", "payload_encoding": "string", "properties": props});
    b.api("PUT", "/api/queues/%2F/q", Some(json!({"durable": false})))
        .await;
    let (code, body) = b
        .api(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            Some(publish(json!({"user_id": "someone-else"}))),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = b
        .api(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            Some(publish(json!({"user_id": "guest"}))),
        )
        .await;
    assert_eq!((code, body["routed"].clone()), (200, json!(true)));
    let (code, _) = b
        .api(
            "POST",
            "/api/exchanges/%2F/amq.rabbitmq.trace/publish",
            Some(publish(json!({}))),
        )
        .await;
    assert_eq!(code, 401, "internal exchanges refuse publishes");
    // Another connection's exclusive queue cannot be read or purged.
    let (_conn, ch) = b.channel().await;
    ch.queue_declare(
        "mine".into(),
        lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let (code, _) = b
        .api(
            "POST",
            "/api/queues/%2F/mine/get",
            Some(json!({"count": 1, "ackmode": "ack_requeue_true"})),
        )
        .await;
    assert_eq!(code, 409);
    let (code, _) = b.api("DELETE", "/api/queues/%2F/mine/contents", None).await;
    assert_eq!(code, 409);
}
