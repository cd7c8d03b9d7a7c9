//! Metrics, OpenAPI, docs and request ids.

use std::collections::BTreeSet;

use serde_json::Value;
use zatabase_tests::Host;

/// Parses the text exposition strictly: every line a comment we know or a
/// sample `name{labels} value` of a declared family.
fn parse_metrics(text: &str) -> Vec<(String, String, f64)> {
    let mut declared = BTreeSet::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "content after # EOF");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("a metric name");
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "bad comment: {line}"
            );
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "unknown"
                    ]
                    .contains(&t),
                    "{line}"
                );
                declared.insert(name.to_owned());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                for pair in labels.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
                (name, labels.to_owned())
            }
            None => (series, String::new()),
        };
        assert!(
            declared.iter().any(|family| name == family
                || name
                    .strip_prefix(family.as_str())
                    .is_some_and(
                        |s| ["_total", "_bucket", "_count", "_sum", "_created"].contains(&s)
                    )),
            "sample of an undeclared family: {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    assert!(eof, "the exposition ends with # EOF");
    samples
}

#[test]
fn metrics_parse_and_count_requests_by_group_and_status() {
    let host = Host::start();
    host.sql_ok("SELECT 1", &[]);
    let not_found = |text: &str| {
        parse_metrics(text)
            .into_iter()
            .find(|(n, l, _)| {
                n == "zatabase_http_requests_total" && l == r#"group="host",status="404""#
            })
            .map_or(0.0, |(_, _, v)| v)
    };
    let before = not_found(&host.get("/metrics").text());
    host.get("/nowhere");
    host.get("/nowhere/either");
    let response = host.get("/metrics");
    // Both refusals counted, once each, under the host's group.
    assert_eq!(not_found(&response.text()) - before, 2.0);
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .contains("openmetrics-text")
    );
    let samples = parse_metrics(&response.text());
    let find = |name: &str, label: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(label))
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name}{{{label}}} in\n{}", response.text()))
    };
    assert!(
        find(
            "zatabase_http_requests_total",
            r#"group="sql",status="200""#
        ) >= 1.0
    );
    assert!(find("zatabase_http_requests_total", r#"status="404""#) >= 1.0);
    assert!(
        find(
            "zatabase_http_request_duration_seconds_count",
            r#"group="sql""#
        ) >= 1.0
    );
    assert!(
        find(
            "zatabase_component_instantiation_seconds_count",
            r#"component="sql""#
        ) >= 1.0
    );
    assert!(
        find(
            "zatabase_db_pool_connections",
            r#"pool="platform",state="open""#
        ) >= 1.0
    );
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// With `http.metrics_token`, `/metrics` answers only that bearer token.
#[test]
fn metrics_can_be_kept_to_a_token() {
    let host = Host::builder()
        .config("[http]\nmetrics_token = \"scrape-me-0123456789\"\n")
        .start();
    for authorization in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("scrape-me-0123456789"),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        let refused = host.request("GET", "/metrics", &headers, Vec::new());
        assert!(refused.expect_error(401).contains("metrics_token"));
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    let scraped = host.request(
        "GET",
        "/metrics",
        &[("authorization", "Bearer scrape-me-0123456789")],
        Vec::new(),
    );
    assert_eq!(scraped.status, 200, "{}", scraped.text());
    assert!(scraped.text().contains("# EOF"));
    let lower_case = host.request(
        "GET",
        "/metrics",
        &[("authorization", "bearer scrape-me-0123456789")],
        Vec::new(),
    );
    assert_eq!(lower_case.status, 200, "the scheme in any case");
    // Health stays public.
    assert_eq!(host.get("/health").status, 200);
}

#[test]
fn openapi_describes_what_is_mounted() {
    let host = Host::start();
    let doc = host.get("/v1/openapi.json").json();
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/health",
        "/health/ready",
        "/healthz",
        "/metrics",
        "/v1/sql",
        "/v1/docs",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for reference in all {
        let pointer = reference.strip_prefix('#').expect("local refs only");
        assert!(doc.pointer(pointer).is_some(), "dangling {reference}");
    }
    // Nothing documented is unmounted.
    for path in doc["paths"].as_object().unwrap().keys() {
        let method = doc["paths"][path]
            .as_object()
            .unwrap()
            .keys()
            .find(|k| *k != "parameters")
            .unwrap()
            .to_uppercase();
        let status = host.request(&method, path, &[], Vec::new()).status;
        assert_ne!(status, 404, "{method} {path} is documented but not mounted");
    }
}

#[test]
fn swagger_ui_is_served_from_the_binary() {
    let host = Host::start();
    let page = host.get("/v1/docs");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("swagger-ui-bundle.js"));
    let bundle = host.get("/v1/docs/swagger-ui-bundle.js");
    assert_eq!(bundle.status, 200);
    assert!(bundle.body.len() > 100_000, "the real bundle");
    assert!(bundle.text().contains("SwaggerUIBundle"));
    assert_eq!(host.get("/v1/docs/swagger-ui.css").status, 200);
    host.get("/v1/docs/../../etc/passwd").expect_error(404);
    host.get("/v1/docs/nope.js").expect_error(404);
    // A name that does not decode to UTF-8 is no file either, in the error shape.
    host.get("/v1/docs/%FF").expect_error(404);
}

#[test]
fn every_response_carries_a_request_id() {
    let host = Host::start();
    let generated = host.get("/health");
    let id = generated.header("x-request-id").expect("a request id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echoed = host.request(
        "GET",
        "/v1/sql",
        &[("x-request-id", "client-id_42")],
        Vec::new(),
    );
    assert_eq!(echoed.header("x-request-id"), Some("client-id_42"));
    let replaced = host.request(
        "GET",
        "/health",
        &[("x-request-id", "bad id\twith spaces")],
        Vec::new(),
    );
    assert_ne!(replaced.header("x-request-id"), Some("bad id\twith spaces"));
    assert_eq!(replaced.header("x-request-id").unwrap().len(), 36);
    // The host's own cron ticks' ids are not a client's to take.
    let forged = host.request(
        "GET",
        "/health",
        &[("x-request-id", "cron-forged")],
        Vec::new(),
    );
    assert_eq!(forged.header("x-request-id").unwrap().len(), 36);
}
