//! The serde shape of `spin.toml`: Spin's v2 manifest, the subset Zatabase
//! reads, strictly (unknown keys are errors, not silently ignored).
//!
//! This file is also compiled into the host's build script, which reads the
//! same manifest to build and embed the guests; keep it free of crate paths.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// `/exact`, `/prefix/...` (the prefix and everything below it), or with
    /// `:name` segments.
    pub route: String,
    pub component: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Path of the `.wasm` component, relative to the manifest.
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub build: Option<Build>,
    /// Spin's place for tool-specific settings; Zatabase's live under `zatabase`.
    #[serde(default)]
    pub tool: Tools,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    #[serde(default)]
    pub zatabase: Option<ZatabaseComponent>,
}

/// `[component.<id>.tool.zatabase]`: what the host grants the component.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZatabaseComponent {
    /// Host capabilities (WIT interfaces of `zatabase:platform`) it may import.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// With the `sql` capability: the grants through which it reaches the
    /// caller's tenant (`Tables/*`: on every table; `Records`: on any
    /// record set, the guest checking which).
    #[serde(default)]
    pub sql_grants: Vec<String>,
    /// Wall-clock limit of one request, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Linear-memory limit of one instance, in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// The largest request body its routes take, in MiB, when it is not the
    /// host's `http.body_limit_bytes` (a route that streams bulk data).
    #[serde(default)]
    pub body_limit_mb: Option<u64>,
    /// Path of this route group's OpenAPI paths, relative to the manifest.
    #[serde(default)]
    pub openapi: Option<String>,
    /// The feature flag the route group sits behind; off means unmounted.
    #[serde(default)]
    pub feature: Option<String>,
    /// Paths of this component served without authentication (every other
    /// path needs a valid bearer token with a live session).
    #[serde(default)]
    pub public_routes: Vec<String>,
}
