//! Loading a config file: every error, each with `FILE:LINE:COL` and its key.

pub use super::located::ConfigError;
use super::located::Errors;
use super::yaml::{self, join, NodeKind};
use super::{Config, RouteConfig, UpstreamConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Largest config file read (a config is a few KiB; this bounds a mistake, not a design).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let name = path.display().to_string();
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() > MAX_FILE_BYTES {
            return Err(vec![ConfigError {
                file: name,
                line: 0,
                col: 0,
                key: String::new(),
                message: format!(
                    "the config file is {} bytes, over the {} MiB limit",
                    meta.len(),
                    MAX_FILE_BYTES >> 20
                ),
            }]);
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut config = load_str(&text, &name)?;
            config.source = Some(super::ConfigSource {
                path: path.to_path_buf(),
                sha256: hex_sha256(text.as_bytes()),
            });
            Ok(config)
        }
        Err(e) => Err(vec![ConfigError {
            file: name,
            line: 0,
            col: 0,
            key: String::new(),
            message: format!("cannot read config: {e}"),
        }]),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses and validates config text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors {
        file: file.to_string(),
        list: Vec::new(),
    };
    let mut root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            errs.push(e.pos, "", format!("YAML syntax error: {}", e.message));
            return Err(errs.list);
        }
    };
    if root.as_map().is_none() {
        errs.push(root.pos, "", "the config must be a mapping of keys".into());
        return Err(errs.list);
    }
    super::env::substitute(&mut root, "", &|name| std::env::var(name).ok(), &mut errs);
    if !errs.list.is_empty() {
        // A value still holding `${...}` would only add errors about itself.
        return Err(errs.list);
    }
    let mut dups = Vec::new();
    root.duplicate_keys("", &mut dups);
    for (key, pos) in dups {
        errs.push(pos, &key, "duplicate key".into());
    }

    // Deserialize the simple sections as one document without the two lists, so
    // their errors come one by one, then each upstream and route on its own.
    let mut top = root.to_json();
    let obj = top.as_object_mut().expect("checked mapping");
    let upstream_nodes = obj.remove("upstreams");
    let route_nodes = obj.remove("routes");
    let mut config: Option<Config> = errs.de(&root, "", top);

    let mut upstreams = BTreeMap::new();
    if let Some((_, node)) = root.get("upstreams") {
        match node.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let name = k.as_str().unwrap_or_default().to_string();
                    let path = join("upstreams", &name);
                    if let Some(u) = errs.de::<UpstreamConfig>(v, &path, v.to_json()) {
                        upstreams.insert(name, u);
                    }
                }
            }
            None if upstream_nodes.as_ref().is_some_and(|v| !v.is_null()) => errs.push(
                node.pos,
                "upstreams",
                "expected a mapping of name: upstream".into(),
            ),
            None => {}
        }
    }
    let mut routes = Vec::new();
    let mut routes_ok = true;
    if let Some((_, node)) = root.get("routes") {
        match &node.kind {
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    match errs.de::<RouteConfig>(item, &format!("routes[{i}]"), item.to_json()) {
                        Some(r) => routes.push((i, r)),
                        None => routes_ok = false,
                    }
                }
            }
            _ if route_nodes.as_ref().is_some_and(|v| !v.is_null()) => {
                errs.push(node.pos, "routes", "expected a list of routes".into())
            }
            _ => {}
        }
    }

    // References are checked against every upstream named in the file, even ones
    // that failed to deserialize, so one typo is not reported twice.
    let upstream_names: BTreeSet<String> = root
        .get("upstreams")
        .and_then(|(_, n)| n.as_map())
        .map(|entries| {
            entries
                .iter()
                .filter_map(|(k, _)| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    super::validate::check(
        &root,
        &upstream_names,
        &upstreams,
        &routes,
        config.as_ref().map(|c| &c.queue),
        config.as_ref().map(|c| &c.admin),
        &mut errs,
    );
    if let Some(c) = &config {
        super::analyze::check(&root, &c.analyze, &mut errs);
        super::validate::check_limits(&root, &c.limits, &mut errs);
    }
    if let Some(c) = config.as_mut() {
        c.upstreams = upstreams;
        c.routes = routes.into_iter().map(|(_, r)| r).collect();
    }
    match config {
        Some(c) if errs.list.is_empty() && routes_ok => Ok(c),
        _ => {
            errs.list.sort_by_key(|e| (e.line, e.col));
            Err(errs.list)
        }
    }
}

#[cfg(test)]
mod tests;
