//! Spin application manifests (`spin_manifest_version = 2`), for the parts that map onto
//! wasmbridge: HTTP triggers (the WAGI executor served in CGI mode), components with local
//! `source` files, `files`, `environment` and `allowed_outbound_hosts`. What has no meaning
//! here (key-value stores, SQLite databases, variables, AI models, OCI or URL sources, Redis
//! triggers) is refused with the key that asks for it, never ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use wasmtime::Result;

use super::{AppPlan, SourceFile};
use crate::outbound::AllowedHosts;
use crate::router::RoutePattern;
use crate::sandbox::Preopen;
use crate::{AppConfig, Mode};

/// Whether the manifest's text is a Spin manifest.
pub fn is_spin(text: &str) -> bool {
    text.lines()
        .any(|line| line.trim_start().starts_with("spin_manifest_version"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    spin_manifest_version: Spanned<toml::Value>,
    #[serde(default)]
    application: Application,
    variables: Option<Spanned<BTreeMap<String, toml::Value>>>,
    #[serde(default)]
    trigger: BTreeMap<String, Spanned<Vec<Spanned<Trigger>>>>,
    #[serde(default)]
    component: BTreeMap<String, Spanned<Component>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Application {
    #[allow(dead_code)]
    name: Option<String>,
    #[allow(dead_code)]
    version: Option<String>,
    #[allow(dead_code)]
    authors: Option<Vec<String>>,
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    trigger: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    #[allow(dead_code)]
    tool: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trigger {
    #[allow(dead_code)]
    id: Option<String>,
    route: Option<Spanned<toml::Value>>,
    component: Option<Spanned<toml::Value>>,
    executor: Option<Spanned<Executor>>,
    #[serde(default)]
    components: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Executor {
    #[serde(rename = "type")]
    kind: String,
    argv: Option<String>,
    entrypoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Component {
    source: Spanned<toml::Value>,
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    files: Vec<Spanned<toml::Value>>,
    exclude_files: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    allowed_outbound_hosts: Option<Spanned<Vec<String>>>,
    allowed_http_hosts: Option<Spanned<Vec<String>>>,
    key_value_stores: Option<Spanned<Vec<String>>>,
    sqlite_databases: Option<Spanned<Vec<String>>>,
    ai_models: Option<Spanned<Vec<String>>>,
    variables: Option<Spanned<BTreeMap<String, toml::Value>>>,
    dependencies: Option<Spanned<toml::Table>>,
    #[serde(default)]
    #[allow(dead_code)]
    dependencies_inherit_configuration: Option<bool>,
    /// `spin build`'s business, not the server's.
    #[allow(dead_code)]
    build: Option<toml::Table>,
    #[allow(dead_code)]
    tool: Option<toml::Table>,
}

/// The apps of a Spin manifest: one per component an HTTP route reaches.
pub fn plans(file: &SourceFile, defaults: &AppConfig) -> Result<Vec<AppPlan>> {
    let manifest: Manifest = toml::from_str(&file.text).map_err(|e| file.toml_error(e))?;
    let refuse =
        |span, what: &str| Err(file.error(span, format!("{what} cannot be served by wasmbridge")));
    if manifest.spin_manifest_version.get_ref().as_integer() != Some(2) {
        return Err(file.error(
            manifest.spin_manifest_version.span(),
            "only Spin manifest version 2 is read (`spin_manifest_version = 2`); `spin doctor` upgrades older ones",
        ));
    }
    if let Some(variables) = manifest
        .variables
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return refuse(
            variables.span(),
            "`[variables]` (Spin's application variables)",
        );
    }
    let base = match manifest.application.trigger.get("http") {
        Some(http) => match http.get_ref().get("base").map(|b| b.as_str()) {
            None | Some(Some("/")) => "",
            Some(Some(base)) => base.trim_end_matches('/'),
            Some(None) => return Err(file.error(http.span(), "`base` is not a string")),
        },
        None => "",
    };
    for (kind, triggers) in &manifest.trigger {
        if kind != "http" {
            return refuse(
                triggers.span(),
                &format!("`[[trigger.{kind}]]` (only HTTP triggers are)"),
            );
        }
    }

    // Each component becomes one app, whatever number of routes reach it.
    let mut plans: Vec<(String, AppPlan)> = Vec::new();
    for trigger in manifest
        .trigger
        .get("http")
        .map(|t| t.get_ref().as_slice())
        .unwrap_or_default()
    {
        let span = trigger.span();
        let trigger = trigger.get_ref();
        if let Some(components) = &trigger.components {
            return refuse(components.span(), "`components` (Spin's middleware)");
        }
        let Some(component) = &trigger.component else {
            return Err(file.error(span, "the trigger names no `component`"));
        };
        let Some(id) = component.get_ref().as_str() else {
            return Err(file.error(
                component.span(),
                "an inline component: name it in a `[component.NAME]` table and give the name here",
            ));
        };
        let Some(route) = &trigger.route else {
            return Err(file.error(
                span,
                format!("the trigger of component `{id}` has no `route`"),
            ));
        };
        let route = match route.get_ref() {
            toml::Value::String(route) => {
                let full = format!("{base}{route}");
                RoutePattern::parse(&full).map_err(|e| file.error(route_span_of(trigger), e))?
            }
            // `route = { private = true }`: reachable by other components only, so not here.
            toml::Value::Table(table)
                if table.get("private").and_then(|p| p.as_bool()) == Some(true) =>
            {
                continue;
            }
            _ => {
                return Err(file.error(
                    route_span_of(trigger),
                    "`route` is a path or `{ private = true }`",
                ));
            }
        };
        let route = Spanned::new(route_span_of(trigger), route);
        if let Some((_, plan)) = plans.iter_mut().find(|(name, _)| name == id) {
            plan.routes.push(route);
            continue;
        }
        let Some(spec) = manifest.component.get(id) else {
            return Err(file.error(
                component.span(),
                format!("no `[component.{id}]` in the manifest"),
            ));
        };
        let mut plan = component_plan(file, defaults, id, spec)?;
        if let Some(executor) = &trigger.executor {
            let exec = executor.get_ref();
            match exec.kind.as_str() {
                "spin" | "http" => {}
                "wagi" => {
                    if exec.entrypoint.as_deref().is_some_and(|e| e != "_start") {
                        return Err(file.error(
                            executor.span(),
                            "a WAGI `entrypoint` other than `_start`: CGI mode runs the program's `_start`",
                        ));
                    }
                    plan.config.mode = Mode::Cgi;
                    plan.config.cgi.args = wagi_args(exec.argv.as_deref());
                }
                other => {
                    return Err(file.error(
                        executor.span(),
                        format!("executor `{other}` is not `spin` or `wagi`"),
                    ));
                }
            }
        }
        plan.routes.push(route);
        plans.push((id.to_string(), plan));
    }
    Ok(plans.into_iter().map(|(_, plan)| plan).collect())
}

fn route_span_of(trigger: &Trigger) -> std::ops::Range<usize> {
    trigger.route.as_ref().map(|r| r.span()).unwrap_or(0..0)
}

/// WAGI's `argv` template, after the program's name: `${SCRIPT_NAME}` is the name itself, and
/// `${ARGS}` (a query's words, RFC 3875 section 4.4) is not passed.
fn wagi_args(argv: Option<&str>) -> Vec<String> {
    argv.unwrap_or("${SCRIPT_NAME} ${ARGS}")
        .split_whitespace()
        .skip(1)
        .filter(|arg| *arg != "${ARGS}")
        .map(String::from)
        .collect()
}

fn component_plan(
    file: &SourceFile,
    defaults: &AppConfig,
    id: &str,
    spec: &Spanned<Component>,
) -> Result<AppPlan> {
    let component = spec.get_ref();
    let unmapped = |span, key: &str| {
        Err(file.error(
            span,
            format!("component `{id}`: `{key}` cannot be served by wasmbridge"),
        ))
    };
    if let Some(value) = component
        .key_value_stores
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return unmapped(value.span(), "key_value_stores");
    }
    if let Some(value) = component
        .sqlite_databases
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return unmapped(value.span(), "sqlite_databases");
    }
    if let Some(value) = component
        .ai_models
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return unmapped(value.span(), "ai_models");
    }
    if let Some(value) = component
        .variables
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return unmapped(value.span(), "variables");
    }
    if let Some(value) = component
        .dependencies
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return unmapped(value.span(), "dependencies");
    }
    if let Some(value) = component
        .exclude_files
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return unmapped(value.span(), "exclude_files");
    }
    if let Some(hosts) = component
        .allowed_http_hosts
        .as_ref()
        .filter(|v| !v.get_ref().is_empty())
    {
        return Err(file.error(
            hosts.span(),
            format!(
                "component `{id}`: `allowed_http_hosts` is Spin 1's; write `allowed_outbound_hosts`"
            ),
        ));
    }
    let source = match component.source.get_ref() {
        toml::Value::String(path) => file.resolve(path),
        toml::Value::Table(table) if table.contains_key("url") => {
            return Err(file.error(
                component.source.span(),
                format!("component `{id}`: a `source` with a `url` is not fetched; download it and give its path"),
            ));
        }
        _ => {
            return Err(file.error(
                component.source.span(),
                format!("component `{id}`: a `source` from a registry is not pulled; pull it and give its path"),
            ));
        }
    };

    let mut config = AppConfig {
        name: id.to_string(),
        ..defaults.clone()
    };
    config.mode = Mode::Auto;
    config.cgi.workers = 0;
    // Spin grants nothing the manifest does not list.
    config.sandbox.dirs = Vec::new();
    config.sandbox.env = Vec::new();
    config.sandbox.inherit_network = false;
    config.sandbox.allow_ip_name_lookup = false;
    config.sandbox.allowed_outbound_hosts = AllowedHosts::default();
    for entry in &component.files {
        config.sandbox.dirs.push(files_grant(file, id, entry)?);
    }
    config.sandbox.env = component
        .environment
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if let Some(hosts) = &component.allowed_outbound_hosts {
        config.sandbox.allowed_outbound_hosts = AllowedHosts::parse(hosts.get_ref())
            .map_err(|e| file.error(hosts.span(), format!("component `{id}`: {e:#}")))?;
    }
    Ok(AppPlan {
        routes: Vec::new(),
        source: Spanned::new(component.source.span(), source),
        config,
        spin_headers: true,
    })
}

/// A `files` entry as a read-only grant. `{ source = "DIR", destination = "/GUEST" }` maps a
/// directory; a pattern (`static/**/*`) grants the directory it starts in, at the same path
/// under `/`. Spin copies single files; a grant is a directory, so a single file is refused.
fn files_grant(file: &SourceFile, id: &str, entry: &Spanned<toml::Value>) -> Result<Preopen> {
    let error = |reason: String| file.error(entry.span(), format!("component `{id}`: {reason}"));
    let (source, destination) = match entry.get_ref() {
        toml::Value::String(pattern) => {
            let dir: Vec<&str> = pattern
                .split('/')
                .take_while(|segment| !segment.contains(['*', '?', '[', '{']))
                .collect();
            let dir = if dir.len() == pattern.split('/').count() {
                pattern.trim_end_matches('/').to_string()
            } else {
                dir.join("/")
            };
            (dir.clone(), format!("/{}", dir.trim_start_matches("./")))
        }
        toml::Value::Table(table) => {
            let get = |key: &str| table.get(key).and_then(|v| v.as_str()).map(String::from);
            match (get("source"), get("destination")) {
                (Some(source), Some(destination)) if table.len() == 2 => (source, destination),
                _ => {
                    return Err(error(
                        "a `files` mapping is `{ source = \"DIR\", destination = \"/PATH\" }`"
                            .into(),
                    ));
                }
            }
        }
        _ => {
            return Err(error(
                "a `files` entry is a pattern or a `{ source, destination }` table".into(),
            ));
        }
    };
    if source.is_empty() || source == "." {
        return Err(error(
            "a `files` pattern at the application's top would grant all of its directory (the \
             manifest and the sources too); put the files in a directory and name it"
                .into(),
        ));
    }
    let host = file.resolve(&source);
    if Path::new(&source).is_absolute() || source.split('/').any(|s| s == "..") {
        return Err(error(format!(
            "`files` source `{source}` is outside the application's directory"
        )));
    }
    if host.is_file() {
        return Err(error(format!(
            "`files` names the single file `{source}`; wasmbridge grants directories: map the directory it is in"
        )));
    }
    if !host.is_dir() {
        return Err(error(format!(
            "`files` source `{}` is not a directory",
            host.display()
        )));
    }
    let guest = if destination.is_empty() || destination == "/." {
        "/".to_string()
    } else {
        destination
    };
    Ok(Preopen {
        host: host.canonicalize().unwrap_or(host),
        guest,
        writable: false,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn wagi_argv() {
        assert_eq!(super::wagi_args(None), Vec::<String>::new());
        assert_eq!(
            super::wagi_args(Some("${SCRIPT_NAME} -x ${ARGS}")),
            vec!["-x"]
        );
    }
}
