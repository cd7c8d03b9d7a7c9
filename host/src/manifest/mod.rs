//! `spin.toml`, read once at start-up into a validated [`App`].
//!
//! Like Spin's loader, nothing downstream reads TOML: the runtime gets
//! resolved components (bytes, grants, limits) and typed routes. Every
//! mistake in the manifest is a start-up error that names the key.

pub mod schema;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::auth::access::SqlGrant;
use crate::caps::Capability;

/// The longest `timeout_ms` a component may name: an hour.
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// The most `memory_mb` a component may name, as `components.max_memory_mb`
/// may be (the host refuses one past its own at load).
const MAX_MEMORY_MB: u64 = 4096;

/// The manifest compiled into the binary, and the files it names.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_app.rs"));
}

/// A resolved, validated application.
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub components: Vec<Arc<ComponentSpec>>,
    pub routes: Vec<Route>,
    /// Every feature flag a component sits behind, those turned off too.
    pub features: BTreeSet<String>,
}

/// One component, ready to compile.
pub struct ComponentSpec {
    pub id: String,
    pub description: Option<String>,
    pub wasm: Cow<'static, [u8]>,
    pub grants: BTreeSet<Capability>,
    /// The grants through which its `sql` reaches the caller's tenant.
    pub sql_grants: Arc<[SqlGrant]>,
    pub timeout: Option<Duration>,
    pub memory_mb: Option<u64>,
    /// The largest request body its routes take, when not the host's.
    pub body_limit_bytes: Option<usize>,
    /// The `paths` object of the route group's OpenAPI fragment.
    pub openapi: Option<serde_json::Value>,
    pub feature: Option<String>,
    /// Exact paths served without authentication.
    pub public_routes: Vec<String>,
}

impl std::fmt::Debug for ComponentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentSpec")
            .field("id", &self.id)
            .field("wasm_bytes", &self.wasm.len())
            .field("grants", &self.grants)
            .field("sql_grants", &self.sql_grants)
            .field("timeout", &self.timeout)
            .field("memory_mb", &self.memory_mb)
            .field("feature", &self.feature)
            .finish_non_exhaustive()
    }
}

/// An HTTP route to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// As written in the manifest, e.g. `/v1/auth/...`.
    pub pattern: String,
    pub component: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl Route {
    /// The axum paths this route mounts: the path itself and, for a
    /// `/...` wildcard, everything below it.
    pub fn axum_paths(&self) -> Vec<String> {
        let base: String = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param(p) => format!("/{{{p}}}"),
            })
            .collect();
        let mut paths = vec![if base.is_empty() {
            "/".to_owned()
        } else {
            base.clone()
        }];
        if self.wildcard {
            paths.push(format!("{base}/{{*rest}}"));
        }
        paths
    }

    /// The route in OpenAPI's path syntax, when it is not a wildcard.
    pub fn openapi_path(&self) -> Option<String> {
        (!self.wildcard).then(|| self.axum_paths().remove(0))
    }

    /// Whether an OpenAPI path (`/v1/things/{id}`) is served by this route.
    pub fn covers(&self, openapi_path: &str) -> bool {
        let parts: Vec<&str> = openapi_path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return false;
        }
        self.segments
            .iter()
            .zip(&parts)
            .all(|(segment, part)| match segment {
                Segment::Literal(l) => l == part,
                Segment::Param(_) => part.starts_with('{') && part.ends_with('}'),
            })
    }

    /// The paths the route matches, parameters unnamed: two routes sharing
    /// one overlap. A wildcard route matches its prefix too.
    fn shapes(&self) -> Vec<String> {
        let base: String = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => format!("/{l}"),
                Segment::Param(_) => "/:".to_owned(),
            })
            .collect();
        let mut shapes = vec![base.clone()];
        if self.wildcard {
            shapes.push(format!("{base}/..."));
        }
        shapes
    }

    /// Where its parameters stand, and its wildcard if it has one, each as
    /// the shape of the path before it. The router takes no wildcard and
    /// parameter at one place (`/a/...` beside `/a/:id` or `/a/:id/b`),
    /// whatever follows.
    fn open_segments(&self) -> (Vec<String>, Option<String>) {
        let mut prefix = String::new();
        let mut params = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => prefix.push_str(&format!("/{l}")),
                Segment::Param(_) => {
                    params.push(format!("{prefix}/"));
                    prefix.push_str("/:");
                }
            }
        }
        let wildcard = self.wildcard.then(|| format!("{prefix}/"));
        (params, wildcard)
    }
}

/// Reads a file the manifest names, by its path as written there.
pub type FileReader = dyn Fn(&str) -> anyhow::Result<Cow<'static, [u8]>>;

/// Where the manifest comes from.
pub enum Source {
    /// The `spin.toml` compiled into the binary with its components.
    Embedded,
    /// A manifest on disk; `source` and `openapi` paths are relative to it.
    File(PathBuf),
}

/// Reads, validates and resolves the manifest. `feature_enabled` says which
/// feature flags are on; route groups behind a disabled flag are left out.
pub fn load(source: &Source, feature_enabled: &dyn Fn(&str) -> bool) -> anyhow::Result<App> {
    let (text, files): (Cow<'static, str>, Box<FileReader>) = match source {
        Source::Embedded => (
            Cow::Borrowed(embedded::MANIFEST),
            Box::new(|path: &str| {
                embedded::FILES
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, bytes)| Cow::Borrowed(*bytes))
                    .with_context(|| format!("`{path}` was not embedded at build time"))
            }),
        ),
        Source::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading manifest {}", path.display()))?;
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (
                Cow::Owned(text),
                Box::new(move |file: &str| {
                    let full = dir.join(file);
                    std::fs::read(&full)
                        .map(Cow::Owned)
                        .with_context(|| format!("reading {}", full.display()))
                }),
            )
        }
    };
    resolve(&text, &*files, feature_enabled)
}

/// Parses and validates manifest text; `read` fetches the files it names.
pub fn resolve(
    text: &str,
    read: &FileReader,
    feature_enabled: &dyn Fn(&str) -> bool,
) -> anyhow::Result<App> {
    let manifest: schema::Manifest = toml::from_str(text).context("invalid spin.toml")?;
    ensure!(
        manifest.spin_manifest_version == 2,
        "spin_manifest_version must be 2, found {}",
        manifest.spin_manifest_version
    );

    let mut routes: Vec<Route> = Vec::new();
    let mut shapes = BTreeMap::new();
    for trigger in &manifest.trigger.http {
        ensure!(
            manifest.component.contains_key(&trigger.component),
            "route `{}` names component `{}`, which has no [component.{}] table",
            trigger.route,
            trigger.component,
            trigger.component
        );
        let route = parse_route(&trigger.route, &trigger.component)?;
        for shape in route.shapes() {
            if let Some(other) = shapes.insert(shape, route.pattern.clone()) {
                bail!("routes `{other}` and `{}` overlap", route.pattern);
            }
        }
        // A wildcard where another route has a parameter.
        let (params, wildcard) = route.open_segments();
        for other in &routes {
            let (other_params, other_wildcard) = other.open_segments();
            let clash = wildcard.as_ref().is_some_and(|w| other_params.contains(w))
                || other_wildcard.as_ref().is_some_and(|w| params.contains(w));
            ensure!(
                !clash,
                "routes `{}` and `{}` overlap: a wildcard and a parameter at one segment",
                other.pattern,
                route.pattern
            );
        }
        routes.push(route);
    }

    let mut components = Vec::new();
    let mut features = BTreeSet::new();
    for (id, component) in &manifest.component {
        validate_id(id)?;
        ensure!(
            routes.iter().any(|r| &r.component == id),
            "component `{id}` has no [[trigger.http]] route"
        );
        let zatabase = component.tool.zatabase.as_ref();
        let feature = zatabase.and_then(|z| z.feature.clone());
        features.extend(feature.clone());
        if feature.as_deref().is_some_and(|f| !feature_enabled(f)) {
            routes.retain(|r| &r.component != id);
            continue;
        }
        let grants = zatabase
            .map(|z| &z.capabilities[..])
            .unwrap_or_default()
            .iter()
            .map(|name| {
                name.parse::<Capability>()
                    .with_context(|| format!("component `{id}`: unknown capability `{name}`"))
            })
            .collect::<anyhow::Result<BTreeSet<_>>>()?;
        let sql_grants = zatabase
            .map(|z| &z.sql_grants[..])
            .unwrap_or_default()
            .iter()
            .map(|name| {
                name.parse::<SqlGrant>()
                    .map_err(|e| anyhow::anyhow!("component `{id}`: sql_grants: {e}"))
            })
            .collect::<anyhow::Result<Arc<[_]>>>()?;
        ensure!(
            grants.contains(&Capability::Sql) != sql_grants.is_empty(),
            "component `{id}`: sql_grants names the grants through which the `sql` capability \
             reaches the caller's tenant: it is needed with that capability and only with it"
        );
        let openapi = match zatabase.and_then(|z| z.openapi.as_deref()) {
            Some(path) => Some(load_openapi(id, path, read, &routes)?),
            None => None,
        };
        if let Some(timeout) = zatabase.and_then(|z| z.timeout_ms) {
            ensure!(
                (1..=MAX_TIMEOUT_MS).contains(&timeout),
                "component `{id}`: timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"
            );
        }
        if let Some(memory) = zatabase.and_then(|z| z.memory_mb) {
            ensure!(
                (1..=MAX_MEMORY_MB).contains(&memory),
                "component `{id}`: memory_mb must be between 1 and {MAX_MEMORY_MB}"
            );
        }
        let body_limit_bytes = match zatabase.and_then(|z| z.body_limit_mb) {
            Some(mb) => {
                ensure!(
                    (1..=16 * 1024).contains(&mb),
                    "component `{id}`: body_limit_mb must be between 1 and 16384"
                );
                Some(usize::try_from(mb << 20)?)
            }
            None => None,
        };
        let public_routes = zatabase
            .map(|z| z.public_routes.clone())
            .unwrap_or_default();
        for path in &public_routes {
            // Compared with the request's path as it is: a parameter
            // (`:id`, `{id}`), an empty segment or a trailing slash would
            // never match one, and the route would stay private unsaid.
            let exact = path.starts_with('/')
                && !path.contains([':', '{', '}'])
                && (path == "/" || !path.ends_with('/'))
                && !path.contains("//");
            ensure!(
                exact && routes.iter().any(|r| &r.component == id && r.covers(path)),
                "component `{id}`: public route `{path}` is not an exact path the component serves"
            );
        }
        components.push(Arc::new(ComponentSpec {
            id: id.clone(),
            description: component.description.clone(),
            wasm: read(&component.source).with_context(|| format!("component `{id}`"))?,
            grants,
            sql_grants,
            timeout: zatabase
                .and_then(|z| z.timeout_ms)
                .map(Duration::from_millis),
            memory_mb: zatabase.and_then(|z| z.memory_mb),
            body_limit_bytes,
            openapi,
            feature,
            public_routes,
        }));
    }

    Ok(App {
        name: manifest.application.name,
        components,
        routes,
        features,
    })
}

fn validate_id(id: &str) -> anyhow::Result<()> {
    let kebab = !id.is_empty()
        && id.split('-').all(|word| {
            !word.is_empty()
                && word.starts_with(|c: char| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    ensure!(
        kebab,
        "component id `{id}` must be kebab-case (e.g. `my-component`)"
    );
    Ok(())
}

fn parse_route(pattern: &str, component: &str) -> anyhow::Result<Route> {
    let Some(rest) = pattern.strip_prefix('/') else {
        bail!("route `{pattern}` must start with `/`");
    };
    let mut segments = Vec::new();
    let mut wildcard = false;
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == "..." {
            ensure!(
                i == parts.len() - 1,
                "route `{pattern}`: `...` must be the last segment"
            );
            wildcard = true;
        } else if let Some(name) = part.strip_prefix(':') {
            ensure!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "route `{pattern}`: bad parameter `{part}`"
            );
            segments.push(Segment::Param(name.to_owned()));
        } else {
            ensure!(
                part.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)),
                "route `{pattern}`: bad segment `{part}`"
            );
            segments.push(Segment::Literal((*part).to_owned()));
        }
    }
    Ok(Route {
        pattern: pattern.to_owned(),
        component: component.to_owned(),
        segments,
        wildcard,
    })
}

/// A route group's OpenAPI fragment: `{"paths": {...}}` (and optionally
/// `components.schemas`). Every path must be one the component serves, so
/// the document never advertises what is not mounted.
fn load_openapi(
    id: &str,
    path: &str,
    read: &FileReader,
    routes: &[Route],
) -> anyhow::Result<serde_json::Value> {
    let bytes = read(path).with_context(|| format!("component `{id}`: openapi"))?;
    let fragment: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("component `{id}`: {path} is not JSON"))?;
    let Some(paths) = fragment.get("paths").and_then(|p| p.as_object()) else {
        bail!("component `{id}`: {path} has no `paths` object");
    };
    for documented in paths.keys() {
        ensure!(
            routes
                .iter()
                .any(|r| r.component == id && r.covers(documented)),
            "component `{id}`: {path} documents `{documented}`, which no route of the component serves"
        );
    }
    Ok(fragment)
}

#[cfg(test)]
mod tests;
