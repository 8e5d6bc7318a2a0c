//! The code's shape, read from the code itself (`docs/ARCHITECTURE.md`):
//! the modules of `src/` import each other without a loop, the engine never
//! imports the layers above it, and the client crate a tenant site adds
//! knows nothing of the server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Root re-exports (`pub use engine::{command, decide}`): a path through
/// them is an import of the module that owns them.
const ALIASES: [(&str, &str); 2] = [("command", "engine"), ("decide", "engine")];

/// The top-level module a file of `src/` belongs to (`src/engine/decide.rs`
/// -> `engine`); `None` for the crate root and `main.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module -> the other top-level modules its code names as `crate::<m>`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let name = ALIASES.iter().find(|(a, _)| *a == name).map_or(name.clone(), |(_, m)| m.to_string());
            if !name.is_empty() && name != module {
                edges.insert(name);
            }
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_of_src_import_without_a_loop() {
    let graph = import_graph();
    assert!(graph.contains_key("engine") && graph.contains_key("serve"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import loop: {}\n{graph:#?}", cycle.join(" -> "));
    }
}

#[test]
fn the_engine_imports_no_layer_above_it() {
    let graph = import_graph();
    let above = ["apply", "audit", "bench", "cli", "demo", "report", "serve", "store"];
    for module in ["engine", "log", "projector"] {
        let imports = &graph[module];
        let wrong: Vec<_> = above.iter().filter(|m| imports.contains(**m)).collect();
        assert!(wrong.is_empty(), "{module} imports {wrong:?}");
    }
    // The CLI only parses and dispatches: nothing below it names it.
    for (module, imports) in &graph {
        assert!(module == "cli" || !imports.contains("cli"), "{module} imports cli");
    }
}

#[test]
fn the_client_crate_knows_nothing_of_the_server() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("client/Cargo.toml")).unwrap();
    let dependencies = manifest.split("[dependencies]").nth(1).expect("a [dependencies] table");
    let names: Vec<&str> = dependencies
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    assert!(names.contains(&"async-nats"), "{names:?}");
    for server in ["ledger", "projections", "replay", "events", "clap"] {
        assert!(!names.contains(&server), "ledger-client depends on {server}");
    }
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("client/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for server in ["ledger::", "projections::", "replay::"] {
            assert!(!text.contains(&format!("use {server}")), "{} names {server}", file.display());
        }
    }
}
