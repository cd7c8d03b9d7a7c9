//! Turns each folder of `runtime/` into a test, and lists the fixtures, so a
//! fixture no runtime case uses fails the build's own test.

use std::fmt::Write as _;
use std::path::Path;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed={}", root.join("runtime").display());
    println!("cargo:rerun-if-changed={}", root.join("fixtures").display());
    let mut code = String::new();
    for case in names(&root.join("runtime")) {
        let ident = case.replace('-', "_");
        writeln!(code, "runtime_case!({ident}, {case:?});").unwrap();
    }
    let fixtures = names(&root.join("fixtures"));
    writeln!(code, "pub const FIXTURES: &[&str] = &{fixtures:?};").unwrap();
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(Path::new(&out).join("runtime_cases.rs"), code).unwrap();
}
