//! The function template marketplace: each member of `templates/` is a
//! function built with spin-sdk plus its `template.toml`; host/build.rs
//! builds and embeds them, and this module reads them once, strictly.

use std::collections::BTreeSet;

use anyhow::{Context, ensure};
use serde::Deserialize;

use crate::caps::variables::valid_name;
use crate::caps::zatabase::platform::functions::{ParameterFormat, Template, TemplateParameter};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_templates.rs"));
}

/// `template.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    /// An install is public unless its request says otherwise.
    #[serde(default)]
    public: bool,
    #[serde(default)]
    parameters: Vec<Parameter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Parameter {
    name: String,
    description: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    default: Option<String>,
    #[serde(default)]
    format: Format,
}

/// `format` in `template.toml`: what a value must look like, checked when
/// the template is installed.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Format {
    #[default]
    Text,
    Identifier,
    HeaderName,
    PathSegment,
}

impl From<Format> for ParameterFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Text => Self::Text,
            Format::Identifier => Self::Identifier,
            Format::HeaderName => Self::HeaderName,
            Format::PathSegment => Self::PathSegment,
        }
    }
}

/// A template and its component.
pub struct Embedded {
    pub info: Template,
    pub wasm: &'static [u8],
}

/// Every embedded template, checked: its name is its folder's, its
/// parameters are Spin variable names, used once, and a required one has
/// no default.
pub fn load() -> anyhow::Result<Vec<Embedded>> {
    embedded::TEMPLATES
        .iter()
        .map(|(folder, text, wasm)| {
            let metadata: Metadata = toml::from_str(text)
                .with_context(|| format!("templates/{folder}/template.toml"))?;
            ensure!(
                metadata.name == *folder,
                "templates/{folder}/template.toml names `{}`; a template is named by its folder",
                metadata.name
            );
            let mut seen = BTreeSet::new();
            for parameter in &metadata.parameters {
                ensure!(
                    valid_name(&parameter.name) && seen.insert(parameter.name.as_str()),
                    "template `{folder}`: parameter `{}` is not a variable name, or is used twice",
                    parameter.name
                );
                ensure!(
                    !(parameter.required && parameter.default.is_some()),
                    "template `{folder}`: required parameter `{}` has a default",
                    parameter.name
                );
                // A secret is sealed by the host before the route group
                // sees it, so the host alone checks it (as text); and a
                // default would be published by the marketplace listing.
                ensure!(
                    !parameter.secret
                        || (parameter.default.is_none()
                            && matches!(parameter.format, Format::Text)),
                    "template `{folder}`: secret parameter `{}` has a default or a format",
                    parameter.name
                );
            }
            Ok(Embedded {
                info: Template {
                    name: metadata.name,
                    description: metadata.description,
                    tags: metadata.tags,
                    public: metadata.public,
                    parameters: metadata
                        .parameters
                        .into_iter()
                        .map(|p| TemplateParameter {
                            name: p.name,
                            description: p.description,
                            required: p.required,
                            secret: p.secret,
                            default: p.default,
                            format: p.format.into(),
                        })
                        .collect(),
                },
                wasm,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_reads_and_is_a_component() {
        let templates = super::load().unwrap();
        let names: Vec<&str> = templates.iter().map(|t| t.info.name.as_str()).collect();
        assert_eq!(
            names,
            ["crud", "hello", "kv-counter", "vector-search", "webhook"]
        );
        for template in templates {
            assert!(
                template.wasm.starts_with(b"\0asm\x0d\0\x01\0"),
                "{} is a component",
                template.info.name
            );
            assert!(!template.info.description.is_empty());
        }
    }
}
