//! Runtime cases: each folder of `tests/runtime/` holds a `spin.toml` whose
//! sources name fixtures (`<fixture>.wasm`) and an `expect.toml`:
//!
//! ```toml
//! config = "..."              # extra host configuration (TOML), optional
//! startup_error = "..."       # the host must refuse to start, saying this
//! log_contains = ["..."]      # the host's log must hold these, after the requests
//!
//! [[request]]
//! method = "GET"              # default GET
//! path = "/loop"
//! body = "..."                # optional
//! request_id = "..."          # sent as `x-request-id`, optional
//! status = 504
//! body_contains = "..."       # optional
//! ```

use std::path::Path;

use crate::{Host, fixture, scratch, workspace};

/// Runs the case in `tests/runtime/<name>`.
pub fn run_case(name: &str) {
    let case = workspace().join("tests/runtime").join(name);
    let expect: toml::Table = std::fs::read_to_string(case.join("expect.toml"))
        .unwrap_or_else(|e| panic!("{name}/expect.toml: {e}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}/expect.toml: {e}"));
    let dir = scratch();
    let manifest_text = std::fs::read_to_string(case.join("spin.toml")).unwrap();
    for fixture_name in fixtures_named(&manifest_text) {
        std::fs::copy(
            fixture(&fixture_name),
            dir.join(format!("{fixture_name}.wasm")),
        )
        .unwrap();
    }
    let manifest = dir.join("spin.toml");
    std::fs::write(&manifest, &manifest_text).unwrap();
    let config = expect.get("config").and_then(|c| c.as_str()).unwrap_or("");
    let builder = Host::builder().manifest(&manifest).config(config);

    if let Some(error) = expect.get("startup_error").and_then(|e| e.as_str()) {
        match builder.try_start() {
            Ok(_) => panic!("{name}: the host started, expected it to refuse: {error}"),
            Err(log) => assert!(
                log.contains(error),
                "{name}: the log lacks `{error}`:\n{log}"
            ),
        }
        return;
    }

    let host = builder.start();
    for request in expect
        .get("request")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let method = request
            .get("method")
            .and_then(|m| m.as_str())
            .unwrap_or("GET");
        let path = request["path"].as_str().expect("request.path");
        let body = request.get("body").and_then(|b| b.as_str()).unwrap_or("");
        let mut headers = vec![("content-type", "application/json")];
        if let Some(id) = request.get("request_id").and_then(|i| i.as_str()) {
            headers.push(("x-request-id", id));
        }
        let response = host.request(method, path, &headers, body.as_bytes().to_vec());
        let status = request["status"].as_integer().expect("request.status") as u16;
        assert_eq!(
            response.status,
            status,
            "{name}: {method} {path}: {}",
            response.text()
        );
        if status >= 400 {
            response.expect_error(status);
        }
        if let Some(needle) = request.get("body_contains").and_then(|b| b.as_str()) {
            assert!(
                response.text().contains(needle),
                "{name}: {method} {path}: `{needle}` not in {}",
                response.text()
            );
        }
    }
    for needle in expect
        .get("log_contains")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        let needle = needle.as_str().unwrap();
        let found = crate::eventually(std::time::Duration::from_secs(5), || {
            host.log().contains(needle)
        });
        assert!(found, "{name}: the log lacks `{needle}`:\n{}", host.log());
    }
}

/// Fixture names a manifest's sources refer to (`source = "<name>.wasm"`).
pub fn fixtures_named(manifest: &str) -> Vec<String> {
    let table: toml::Table = manifest.parse().expect("spin.toml is TOML");
    let mut names: Vec<String> = table
        .get("component")
        .and_then(|c| c.as_table())
        .into_iter()
        .flat_map(|components| components.values())
        .filter_map(|c| {
            c.get("source")?
                .as_str()?
                .strip_suffix(".wasm")
                .map(str::to_owned)
        })
        .filter(|name| !Path::new(name).is_absolute() && !name.contains('/'))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every runtime case's fixtures, to check each fixture is exercised.
pub fn fixtures_in_cases() -> Vec<String> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(workspace().join("tests/runtime")).unwrap() {
        let manifest = entry.unwrap().path().join("spin.toml");
        all.extend(fixtures_named(&std::fs::read_to_string(manifest).unwrap()));
    }
    all
}
