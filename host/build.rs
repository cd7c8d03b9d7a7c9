//! Builds the guests named in `spin.toml` and embeds them, with the manifest
//! and the Swagger UI assets, so the `zatabase` binary is self-contained.
//!
//! Each component's `[component.<id>.build] command` runs here (Spin's build
//! convention) with `CARGO_TARGET_DIR` pointing at `<target>/guests`, a
//! directory of its own: a nested cargo must not share the outer build's
//! lock. A `source` under `target/` is then read from that directory.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/manifest/schema.rs"]
#[allow(dead_code)]
mod schema;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR"));
    for watched in [
        "spin.toml",
        "wit",
        "guests",
        "templates",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let manifest_path = root.join("spin.toml");
    let text = std::fs::read_to_string(&manifest_path).expect("reading spin.toml");
    let manifest: schema::Manifest = toml::from_str(&text).expect("spin.toml is invalid");

    let guests_target = target_root(&out_dir).join("guests");
    ensure_wasm_target();
    let mut built = BTreeSet::new();
    for (id, component) in &manifest.component {
        let Some(build) = &component.build else {
            continue;
        };
        if built.insert((build.command.clone(), build.workdir.clone())) {
            run_build(id, build, &root, &guests_target);
        }
    }

    let mut files = BTreeSet::new();
    for component in manifest.component.values() {
        files.insert(component.source.clone());
        if let Some(openapi) = component
            .tool
            .zatabase
            .as_ref()
            .and_then(|z| z.openapi.clone())
        {
            files.insert(openapi);
        }
    }
    let mut code = String::new();
    writeln!(
        code,
        "pub const MANIFEST: &str = include_str!({:?});",
        manifest_path
    )
    .unwrap();
    writeln!(code, "pub const FILES: &[(&str, &[u8])] = &[").unwrap();
    for file in &files {
        let path = match file.strip_prefix("target/") {
            Some(rest) => guests_target.join(rest),
            None => root.join(file),
        };
        assert!(
            path.is_file(),
            "spin.toml names {file}, but {} does not exist",
            path.display()
        );
        writeln!(code, "    ({file:?}, include_bytes!({path:?})),").unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out_dir.join("embedded_app.rs"), code).expect("writing embedded_app.rs");

    templates(&root, &target_root(&out_dir).join("templates"), &out_dir);

    swagger_assets(&out_dir);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// `<target>` from `<target>/[<triple>/]<profile>/build/<pkg>/out`.
fn target_root(out_dir: &Path) -> PathBuf {
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR has a profile directory");
    let above = profile_dir
        .parent()
        .expect("profile directory has a parent");
    let triple = std::env::var("TARGET").unwrap_or_default();
    if above.file_name().is_some_and(|n| n == triple.as_str()) {
        above
            .parent()
            .expect("triple directory has a parent")
            .to_path_buf()
    } else {
        above.to_path_buf()
    }
}

/// Installs the wasm32-wasip2 standard library through rustup if missing.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_ref().is_some_and(|d| d.exists()) {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .expect(
            "running rustup: install the wasm32-wasip2 target (`rustup target add wasm32-wasip2`)",
        );
    assert!(status.success(), "`rustup target add wasm32-wasip2` failed");
}

fn run_build(id: &str, build: &schema::Build, root: &Path, target: &Path) {
    let workdir = match &build.workdir {
        Some(dir) => root.join(dir),
        None => root.to_path_buf(),
    };
    let mut command = Command::new("sh");
    command.arg("-c").arg(&build.command).current_dir(workdir);
    nested_cargo(&mut command, target);
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running the build of component `{id}`: {e}"));
    assert!(
        status.success(),
        "building component `{id}` failed: `{}`",
        build.command
    );
}

/// Builds the marketplace templates (`templates/`, a workspace of their
/// own) and embeds each one's `template.toml` and component.
fn templates(root: &Path, target: &Path, out_dir: &Path) {
    let dir = root.join("templates");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .current_dir(&dir);
    nested_cargo(&mut command, target);
    let status = command.status().expect("running cargo for templates/");
    assert!(status.success(), "building templates/ failed");

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("reading templates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("template.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut code = String::from("pub const TEMPLATES: &[(&str, &str, &[u8])] = &[\n");
    for name in names {
        let wasm = target.join(format!(
            "wasm32-wasip2/release/zatabase_template_{}.wasm",
            name.replace('-', "_")
        ));
        assert!(
            wasm.is_file(),
            "template `{name}` built no {} (its crate must be zatabase-template-{name})",
            wasm.display()
        );
        let metadata = dir.join(&name).join("template.toml");
        writeln!(
            code,
            "    ({name:?}, include_str!({metadata:?}), include_bytes!({wasm:?})),"
        )
        .unwrap();
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("embedded_templates.rs"), code)
        .expect("writing embedded_templates.rs");
}

/// A clean environment for a nested cargo building into `target`.
fn nested_cargo(command: &mut Command, target: &Path) {
    // A clean environment for the nested cargo: keep the user's cargo home,
    // network settings and the jobserver, drop what configures this build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep = [
            "CARGO_HOME",
            "CARGO_MAKEFLAGS",
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTR",
            "CARGO_TERM_",
        ]
        .iter()
        .any(|k| key.starts_with(k));
        if (key.starts_with("CARGO")
            || key.starts_with("__CARGO")
            || key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER")
            && !keep
        {
            command.env_remove(key.as_ref());
        }
    }
    if let Some(cargo_dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![cargo_dir];
        paths.extend(std::env::split_paths(&path));
        command.env(
            "PATH",
            std::env::join_paths(paths).expect("PATH entries are valid"),
        );
    }
    command.env("CARGO_TARGET_DIR", target);
}

/// Swagger UI's distribution files, from the crate that vendors them.
fn swagger_assets(out_dir: &Path) {
    let reader = std::io::Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED);
    let mut zip = zip::ZipArchive::new(reader).expect("the vendored Swagger UI is a zip");
    for name in ["swagger-ui.css", "swagger-ui-bundle.js"] {
        let index = (0..zip.len())
            .find(|&i| {
                zip.by_index(i)
                    .ok()
                    .and_then(|f| f.name().ok().map(|n| n.ends_with(&format!("/dist/{name}"))))
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("Swagger UI has no dist/{name}"));
        let mut bytes = Vec::new();
        zip.by_index(index)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        std::fs::write(out_dir.join(name), bytes).unwrap();
    }
}
