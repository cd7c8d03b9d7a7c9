//! The template marketplace: `GET /v1/functions/templates` and
//! `POST /v1/functions/templates/:name/install`.
//!
//! Templates are built into the host (`templates/`); installing one creates
//! a function from it and deploys its component in one transaction, its
//! parameters becoming the function's variables (secret ones its secrets).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use zatabase_guest_kit::access::{caller, require};
use zatabase_guest_kit::functions::{self, ParameterFormat, Template};
use zatabase_guest_kit::session::{Action, Resource};
use zatabase_guest_kit::{ApiError, Params, Request, Response, db};

use crate::deployments;
use crate::functions::{find, insert};
use crate::settings::{CreateRequest, Settings};

fn describe(template: &Template) -> serde_json::Value {
    json!({
        "name": template.name,
        "description": template.description,
        "tags": template.tags,
        "public": template.public,
        "parameters": template.parameters.iter().map(|p| json!({
            "name": p.name,
            "description": p.description,
            "required": p.required,
            "secret": p.secret,
            "default": p.default,
            "format": match p.format {
                ParameterFormat::Text => "text",
                ParameterFormat::Identifier => "identifier",
                ParameterFormat::HeaderName => "header-name",
                ParameterFormat::PathSegment => "path-segment",
            },
        })).collect::<Vec<_>>(),
    })
}

/// `GET /v1/functions/templates`.
pub fn list(_: &Request, _: &Params) -> Result<Response, ApiError> {
    caller()?;
    let templates: Vec<_> = functions::templates().iter().map(describe).collect();
    Ok(Response::json(200, &json!({ "templates": templates })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    function_name: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    allowed_outbound_hosts: Option<Vec<String>>,
}

/// Variables by name.
type Values = BTreeMap<String, String>;

/// Why `value` does not have `format`, if it does not.
fn misfit(format: ParameterFormat, value: &str) -> Option<&'static str> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    match format {
        _ if value.trim().is_empty() => Some("must not be empty"),
        _ if value.contains('\0') => Some("must not contain NUL characters"),
        ParameterFormat::Text => None,
        ParameterFormat::Identifier => (!(value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')))
        .then_some(
            "must be a plain table name: a-z, 0-9 and `_`, starting with a letter or `_`, \
             at most 63 characters",
        ),
        ParameterFormat::HeaderName => (!(value.len() <= 128 && value.bytes().all(token)))
            .then_some("must be an HTTP header name (letters, digits and ``!#$%&'*+-.^_`|~``)"),
        ParameterFormat::PathSegment => (!(value.len() <= 200
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))))
        .then_some("must be one URL path segment: 1 to 200 letters, digits, `.`, `_`, `~` or `-`"),
    }
}

/// The function's variables and secrets from the template's parameters:
/// given values, else defaults; a required one missing, an unknown one
/// given or a value not in its parameter's format is a 422.
fn variables(template: &Template, mut given: Values) -> Result<(Values, Values), ApiError> {
    let (mut variables, mut secrets) = (BTreeMap::new(), BTreeMap::new());
    for parameter in &template.parameters {
        let value = match (given.remove(&parameter.name), &parameter.default) {
            (Some(value), _) => value,
            (None, Some(default)) => default.clone(),
            (None, None) if parameter.required => {
                return Err(ApiError::unprocessable(format!(
                    "template `{}` needs the parameter `{}`: {}",
                    template.name, parameter.name, parameter.description
                )));
            }
            (None, None) => continue,
        };
        if let Some(why) = misfit(parameter.format, &value) {
            return Err(ApiError::unprocessable(format!(
                "template `{}`: the parameter `{}` {why}",
                template.name, parameter.name
            )));
        }
        if parameter.secret {
            secrets.insert(parameter.name.clone(), value);
        } else {
            variables.insert(parameter.name.clone(), value);
        }
    }
    if let Some(unknown) = given.keys().next() {
        let known: Vec<&str> = template
            .parameters
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        return Err(ApiError::unprocessable(format!(
            "template `{}` has no parameter `{unknown}`; it has: {}",
            template.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok((variables, secrets))
}

/// `POST /v1/functions/templates/:name/install` → 201 with the function,
/// deployed and callable at `/fn/<function_name>`.
pub fn install(request: &Request, params: &Params) -> Result<Response, ApiError> {
    let caller = caller()?;
    let name = params.get("name");
    let template = functions::templates()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no template `{name}`")))?;
    let body: InstallRequest = request.json()?;
    let (variables, secrets) = variables(&template, body.parameters)?;
    let settings = Settings::from_create(
        CreateRequest {
            name: body.function_name,
            description: Some(
                body.description
                    .unwrap_or_else(|| template.description.clone()),
            ),
            variables: Some(variables),
            secrets: Some(secrets),
            public: Some(body.public.unwrap_or(template.public)),
            timeout_ms: body.timeout_ms,
            memory_mb: body.memory_mb,
            allowed_outbound_hosts: body.allowed_outbound_hosts,
        },
        &functions::limits(),
    )?;
    require(Resource::Functions, Some(&settings.name), Action::Write)?;
    let wasm = functions::template_component(name)
        .ok_or_else(|| ApiError::internal(format!("template `{name}` has no component")))?;
    let info = functions::prepare(&wasm).map_err(|e| {
        ApiError::internal(format!("template `{name}` does not load on this host: {e}"))
    })?;
    deployments::fits(&info, settings.memory_mb)?;
    let tx = db::begin()?;
    let id = insert(&tx, &caller, &settings)?;
    deployments::store(&tx, &id, &caller.user_id, &info, &wasm)?;
    db::commit(tx)?;
    let mut function = find(&caller, &id)?;
    function["template"] = json!(name);
    Ok(Response::json(201, &function))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zatabase_guest_kit::functions::TemplateParameter;

    fn template() -> Template {
        let parameter = |name: &str, required, secret, default: Option<&str>| TemplateParameter {
            name: name.to_owned(),
            description: format!("the {name}"),
            required,
            secret,
            default: default.map(str::to_owned),
            format: ParameterFormat::Text,
        };
        Template {
            name: "t".to_owned(),
            description: String::new(),
            tags: Vec::new(),
            public: false,
            parameters: vec![
                parameter("key", true, true, None),
                parameter("greeting", false, false, Some("hi")),
                parameter("extra", false, false, None),
                TemplateParameter {
                    format: ParameterFormat::Identifier,
                    ..parameter("table", false, false, Some("items"))
                },
                TemplateParameter {
                    format: ParameterFormat::HeaderName,
                    ..parameter("header", false, false, Some("x-signature-256"))
                },
            ],
        }
    }

    #[test]
    fn parameters_become_variables_and_secrets() {
        let given = BTreeMap::from([("key".to_owned(), "k".to_owned())]);
        let (variables, secrets) = variables(&template(), given).unwrap();
        assert_eq!(
            variables,
            BTreeMap::from([
                ("greeting".to_owned(), "hi".to_owned()),
                ("header".to_owned(), "x-signature-256".to_owned()),
                ("table".to_owned(), "items".to_owned()),
            ])
        );
        assert_eq!(
            secrets,
            BTreeMap::from([("key".to_owned(), "k".to_owned())])
        );
    }

    #[test]
    fn missing_and_unknown_parameters_are_refused() {
        assert_eq!(
            variables(&template(), BTreeMap::new()).unwrap_err().status,
            422
        );
        let given = BTreeMap::from([
            ("key".to_owned(), "k".to_owned()),
            ("nope".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(variables(&template(), given).unwrap_err().status, 422);
    }

    #[test]
    fn values_must_fit_their_format() {
        let install = |name: &str, value: &str| {
            let given = BTreeMap::from([
                ("key".to_owned(), "k".to_owned()),
                (name.to_owned(), value.to_owned()),
            ]);
            variables(&template(), given)
                .map(|_| ())
                .map_err(|e| e.status)
        };
        assert_eq!(install("key", ""), Err(422));
        assert_eq!(install("greeting", "  "), Err(422));
        assert_eq!(install("greeting", "a\0b"), Err(422));
        assert_eq!(install("greeting", "Hello, world"), Ok(()));
        assert_eq!(install("table", "Bad Name"), Err(422));
        assert_eq!(install("table", "x; drop"), Err(422));
        assert_eq!(install("table", "notes_2"), Ok(()));
        assert_eq!(install("header", "x signature"), Err(422));
        assert_eq!(install("header", "X-Hub-Signature-256"), Ok(()));
    }
}
