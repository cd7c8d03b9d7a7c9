//! Manifest cases: each `cases/<name>.toml` next to `<name>.err` (a phrase
//! the error must contain) or `<name>.ok` (the resolved routes and grants).

use std::borrow::Cow;
use std::path::Path;

use crate::auth::access::resource_name;

fn read(path: &str) -> anyhow::Result<Cow<'static, [u8]>> {
    if path.ends_with(".wasm") {
        return Ok(Cow::Borrowed(b"\0asm"));
    }
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/manifest/cases")
        .join(path);
    Ok(Cow::Owned(std::fs::read(full)?))
}

fn summary(app: &super::App) -> String {
    let mut lines = Vec::new();
    for component in &app.components {
        let grants: Vec<&str> = component.grants.iter().map(|g| g.name()).collect();
        let sql_grants: Vec<String> = component
            .sql_grants
            .iter()
            .map(|g| {
                let every = if g.every_object { "/*" } else { "" };
                format!("{}{every}", resource_name(g.resource))
            })
            .collect();
        lines.push(format!(
            "component {} grants=[{}] sql_grants=[{}] timeout={:?} memory_mb={:?}",
            component.id,
            grants.join(","),
            sql_grants.join(","),
            component.timeout.map(|t| t.as_millis()),
            component.memory_mb
        ));
    }
    for route in &app.routes {
        lines.push(format!(
            "route {} -> {} {:?}",
            route.pattern,
            route.component,
            route.axum_paths()
        ));
    }
    lines.join("\n")
}

#[test]
fn manifest_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/manifest/cases");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        cases += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let disabled = |flag: &str| flag != "disabled-feature";
        let result = super::resolve(&text, &read, &disabled);
        let err = path.with_extension("err");
        let ok = path.with_extension("ok");
        match (result, err.exists()) {
            (Err(e), true) => {
                let expected = std::fs::read_to_string(&err).unwrap();
                let message = format!("{e:#}");
                assert!(
                    message.contains(expected.trim()),
                    "{}: error `{message}` lacks `{}`",
                    path.display(),
                    expected.trim()
                );
            }
            (Ok(app), false) => {
                let expected = std::fs::read_to_string(&ok)
                    .unwrap_or_else(|_| panic!("{} has neither .err nor .ok", path.display()));
                assert_eq!(summary(&app).trim(), expected.trim(), "{}", path.display());
            }
            (Ok(_), true) => panic!("{} resolved but should fail", path.display()),
            (Err(e), false) => panic!("{} failed: {e:#}", path.display()),
        }
    }
    assert!(cases >= 8, "expected the manifest cases, found {cases}");
}
