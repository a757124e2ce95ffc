//! The committed OpenAPI document of the agent protocol (`docs/agent-protocol.openapi.json`) must be
//! exactly what `ferry_types::protocol::openapi()` generates, and must describe every route the server
//! serves under `/agent/v1`. Both checks run in CI, so a changed wire type or a new route cannot ship
//! with a stale document.
//!
//! Refresh the document after an intended change with
//! `FERRY_UPDATE_OPENAPI=1 cargo test -p ferry-types --test openapi_drift`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

const REFRESH: &str = "FERRY_UPDATE_OPENAPI=1 cargo test -p ferry-types --test openapi_drift";

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn generated() -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(&ferry_types::protocol::openapi())?;
    text.push('\n');
    Ok(text)
}

#[test]
fn committed_document_matches_the_wire_types() -> anyhow::Result<()> {
    let path = repo_file("docs/agent-protocol.openapi.json");
    let fresh = generated()?;
    if std::env::var_os("FERRY_UPDATE_OPENAPI").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&path, &fresh).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first_difference = committed
            .lines()
            .zip(fresh.lines())
            .enumerate()
            .find(|(_, (old, new))| old != new)
            .map(|(n, (old, new))| {
                format!(
                    "first difference at line {}:\n  committed: {old}\n  generated: {new}",
                    n + 1
                )
            })
            .unwrap_or_else(|| {
                format!(
                    "the committed document has {} lines, the generated one {}",
                    committed.lines().count(),
                    fresh.lines().count()
                )
            });
        bail!(
            "{} is out of date with the agent protocol's wire types ({first_difference}).\n\
             If the protocol change is intended, refresh the document with\n    {REFRESH}\n\
             and commit it; otherwise undo the change to the wire types.",
            path.display()
        );
    }
    Ok(())
}

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

/// `(path, method)` of every `.route("…", method(…))` in a router's source text. Read as text so that this
/// crate does not depend on the server; a method router with several methods (`get(a).post(b)`) yields
/// each. Anything it cannot read is an error, not a silent skip.
fn parse_routes(source: &str) -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut routes = BTreeSet::new();
    for (n, piece) in source.split(".route(").enumerate().skip(1) {
        let Some(rest) = piece.trim_start().strip_prefix('"') else {
            bail!("route #{n} does not start with a string literal");
        };
        let Some((route, rest)) = rest.split_once('"') else {
            bail!("route #{n} has an unterminated path");
        };
        // The rest of this `.route(` call: up to the parenthesis that closes it.
        let mut depth = 1usize;
        let call_end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .with_context(|| format!("route {route:?} is not closed"))?;
        let call = &rest[..call_end];
        let mut found = false;
        let mut ident = String::new();
        for c in call.chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                ident.push(c);
                continue;
            }
            if c == '(' && METHODS.contains(&ident.as_str()) {
                routes.insert((route.to_owned(), ident.clone()));
                found = true;
            }
            ident.clear();
        }
        if !found {
            bail!("route {route:?} has no recognisable method ({METHODS:?})");
        }
    }
    if routes.is_empty() {
        bail!("found no `.route(\"…\"`: did the router move?");
    }
    Ok(routes)
}

fn server_routes() -> anyhow::Result<BTreeSet<(String, String)>> {
    let path = repo_file("crates/ferry-server/src/agent_api.rs");
    let source =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_routes(&source).with_context(|| format!("reading the routes of {}", path.display()))
}

fn documented_routes(doc: &Value) -> anyhow::Result<BTreeSet<(String, String)>> {
    let paths = doc["paths"]
        .as_object()
        .context("the document has no paths")?;
    let mut routes = BTreeSet::new();
    for (path, ops) in paths {
        let ops = ops
            .as_object()
            .with_context(|| format!("{path} is not an object"))?;
        for method in ops.keys() {
            routes.insert((path.clone(), method.clone()));
        }
    }
    Ok(routes)
}

#[test]
fn every_server_route_is_documented_and_nothing_else() -> anyhow::Result<()> {
    let served = server_routes()?;
    let documented = documented_routes(&ferry_types::protocol::openapi())?;
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&served).collect();
    if !undocumented.is_empty() || !stale.is_empty() {
        bail!(
            "the agent API and its OpenAPI document disagree.\n  served but not documented: {undocumented:?}\n  \
             documented but not served: {stale:?}\nDescribe each route in crates/ferry-types/src/protocol/openapi.rs, \
             then refresh the document with\n    {REFRESH}"
        );
    }
    Ok(())
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_inside_the_document() -> anyhow::Result<()> {
    let doc = ferry_types::protocol::openapi();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty(), "the document references no schema at all");
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .with_context(|| format!("{r} points outside the document"))?;
        if doc.pointer(pointer).is_none() {
            bail!("{r} does not resolve: is a type missing its JsonSchema derive?");
        }
    }
    Ok(())
}

#[test]
fn error_responses_use_the_agent_api_error_schema() {
    let doc = ferry_types::protocol::openapi();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                // 413 comes from the web framework before the handler runs: plain text.
                if status.starts_with('2') || status == "413" {
                    continue;
                }
                assert_eq!(
                    resp["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/AgentApiError",
                    "{method} {path} answers {status} without the AgentApiError schema"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no error response was found to check");
}

#[test]
fn route_parser_reads_every_form_the_router_uses() -> anyhow::Result<()> {
    let source = r#"
        axum::Router::new()
            .route("/ca.pem", get(ca_pem))
            .route(
                "/runs/{run}/chunks/{digest}",
                put(put_chunk).layer(DefaultBodyLimit::max(MAX_CHUNK_BODY)),
            )
            .route("/runs/{run}", axum::routing::get(get_run).delete(delete_run))
    "#;
    let found = parse_routes(source)?;
    let expected: BTreeSet<(String, String)> = [
        ("/ca.pem", "get"),
        ("/runs/{run}/chunks/{digest}", "put"),
        ("/runs/{run}", "get"),
        ("/runs/{run}", "delete"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(found, expected);
    assert!(parse_routes(r#".route(PATH, get(x))"#).is_err());
    assert!(parse_routes(r#".route("/x", handler)"#).is_err());
    Ok(())
}
