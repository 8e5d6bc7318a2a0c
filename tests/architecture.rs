//! The code's shape, read from the code itself (`docs/ARCHITECTURE.md`):
//! the modules of `src/` import each other without a loop, the engine never
//! imports the layers above it, and the client crate a tenant site adds
//! knows nothing of the server.
//!
//! The import graph is read from the paths the code names (`crate::`,
//! `super::`, `self::` and a module's own children), in `use` trees and in
//! expressions, with comments and literals left out. A module and the
//! modules inside it are one room: a child naming its parent's items, or a
//! parent wiring its children, is not an import between rooms. Every other
//! reference is an edge between the two sibling rooms that hold its ends
//! (`engine::writer` naming `serve::core` makes `engine` import `serve`),
//! and at every level the rooms must import each other without a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module of `src/` by its path (`["serve", "core"]`); the crate root is
/// the empty path.
type Module = Vec<String>;

/// Root re-exports (`pub use engine::{command, decide}`): a path through
/// them names the module that owns them.
const ALIASES: [(&str, &str); 2] = [("command", "engine::command"), ("decide", "engine::decide")];

/// Room -> the sibling rooms it imports, each with the first reference
/// that made the edge (`src/serve/core.rs:12 super::metrics::Metrics`).
type Graph = BTreeMap<Module, BTreeMap<Module, String>>;

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// The module a file of `src/` is (`engine/decide.rs` -> `engine::decide`,
/// `serve/http/mod.rs` -> `serve::http`, `lib.rs` -> the root).
fn module_of(relative: &Path) -> Module {
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every file of the library crate in `src/` (`main.rs` is the binary's
/// own crate) with its path relative to `src/` and its text.
fn library_sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|f| (f.strip_prefix(&src).unwrap().to_path_buf(), std::fs::read_to_string(&f).unwrap()))
        .filter(|(relative, _)| relative != Path::new("main.rs"))
        .collect()
}

/// The text with comments, strings and character literals blanked out
/// (newlines kept, so offsets and line numbers still hold): a doc comment
/// or a message that mentions `crate::x` is not an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &str| out.extend(s.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let ident_before = text[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        let len = if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            let (mut depth, mut j) = (0, 0);
            loop {
                if rest[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += rest[j..].chars().next().unwrap().len_utf8();
                }
            }
        } else if let Some(len) = (!ident_before).then(|| raw_string(rest)).flatten() {
            len
        } else if let Some(string) = rest.strip_prefix('"') {
            let mut escaped = false;
            1 + string
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(string.len(), |(at, _)| at + 1)
        } else if let Some(len) = rest.starts_with('\'').then(|| char_literal(rest)).flatten() {
            len
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
            continue;
        };
        blank(&mut out, &rest[..len]);
        i += len;
    }
    out
}

/// The length of a raw string literal (`r"..."`, `br#"..."#`) at the start
/// of `text`.
fn raw_string(text: &str) -> Option<usize> {
    let after_r = text.strip_prefix("br").or_else(|| text.strip_prefix('r'))?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(text.len() - body.len() + end + close.len())
}

/// The length of a character literal (`'x'`, `'\n'`, `'{'`) at the start
/// of `text`, or `None` for a lifetime (`'a`).
fn char_literal(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().skip(1);
    let (_, first) = chars.next()?;
    if first == '\\' {
        // The escaped character, then the closing quote (`'\''`, `'\u{7b}'`).
        return text.get(3..)?.find('\'').map(|at| at + 4);
    }
    let (at, close) = chars.next()?;
    (close == '\'').then_some(at + 1)
}

/// The code's tokens with their byte offsets: identifiers, `::`, and
/// every other character on its own.
fn tokens(code: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut end = at + c.len_utf8();
            while let Some(&(next, d)) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                end = next + d.len_utf8();
                chars.next();
            }
            out.push((at, &code[at..end]));
        } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
            chars.next();
            out.push((at, "::"));
        } else if !c.is_whitespace() {
            out.push((at, &code[at..at + c.len_utf8()]));
        }
    }
    out
}

fn is_ident(token: &str) -> bool {
    token.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The paths a `use` tree names, starting at `tokens[*at]`:
/// `super::core::{fields, Core}` gives `super::core::fields` and
/// `super::core::Core`.
fn use_tree(tokens: &[(usize, &str)], at: &mut usize, mut path: Vec<String>, out: &mut Vec<Vec<String>>) {
    while let Some(&(_, token)) = tokens.get(*at) {
        *at += 1;
        match token {
            "{" => {
                while tokens.get(*at).is_some_and(|(_, t)| *t != "}") {
                    use_tree(tokens, at, path.clone(), out);
                    if tokens.get(*at).is_some_and(|(_, t)| *t == ",") {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            "*" => break,
            "::" => {}
            "as" => *at += 1,
            t if is_ident(t) => path.push(t.to_string()),
            _ => {
                *at -= 1;
                break;
            }
        }
    }
    out.push(path);
}

/// One file's references to other modules: the module each path resolves
/// to (the longest module prefix of its full path) and where it stands.
fn references(relative: &Path, text: &str, modules: &BTreeSet<Module>) -> Vec<(Module, String)> {
    let module = module_of(relative);
    let code = code_only(text);
    let tokens = tokens(&code);
    // Inline modules (`mod tests { ... }`): inside them `super` is the file.
    let mut inline: Vec<(usize, usize, String)> = Vec::new();
    for (i, window) in tokens.windows(3).enumerate() {
        if window[0].1 == "mod" && is_ident(window[1].1) && window[2].1 == "{" {
            let mut depth = 0;
            let close = tokens[i + 2..]
                .iter()
                .find(|(_, t)| {
                    depth += match *t {
                        "{" => 1,
                        "}" => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(code.len(), |(at, _)| *at);
            inline.push((window[2].0, close, window[1].1.to_string()));
        }
    }
    let scope = |offset: usize| {
        let mut scope = module.clone();
        scope.extend(inline.iter().filter(|(s, e, _)| (*s..*e).contains(&offset)).map(|(_, _, n)| n.clone()));
        scope
    };
    let children: BTreeSet<&str> = tokens
        .windows(3)
        .filter(|w| w[0].1 == "mod" && is_ident(w[1].1) && w[2].1 == ";")
        .map(|w| w[1].1)
        .collect();
    let resolve = |path: &[String], offset: usize| -> Option<Module> {
        let scope = scope(offset);
        let mut full: Vec<String> = match path.first()?.as_str() {
            "crate" => {
                let first = path.get(1)?;
                match ALIASES.iter().find(|(alias, _)| alias == first) {
                    Some((_, owner)) => {
                        owner.split("::").map(str::to_string).chain(path[2..].to_vec()).collect()
                    }
                    None => path[1..].to_vec(),
                }
            }
            "super" | "self" => {
                let mut base = scope;
                for segment in path.iter().take_while(|s| *s == "super" || *s == "self") {
                    if segment == "super" {
                        base.pop();
                    }
                }
                base.extend(path.iter().skip_while(|s| *s == "super" || *s == "self").cloned());
                base
            }
            first if children.contains(first) && scope == module => {
                module.iter().chain(path).cloned().collect()
            }
            _ => return None,
        };
        full.retain(|s| s != "self");
        (0..=full.len()).rev().map(|n| full[..n].to_vec()).find(|m| modules.contains(m))
    };
    let line = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (offset, token) = tokens[i];
        let path_start = is_ident(token) && (i == 0 || tokens[i - 1].1 != "::");
        if token == "use" {
            let mut paths = Vec::new();
            i += 1;
            use_tree(&tokens, &mut i, Vec::new(), &mut paths);
            for path in paths {
                if let Some(target) = resolve(&path, offset) {
                    out.push((
                        target,
                        format!("src/{}:{} {}", relative.display(), line(offset), path.join("::")),
                    ));
                }
            }
        } else if path_start && tokens.get(i + 1).is_some_and(|(_, t)| *t == "::") {
            let mut path = vec![token.to_string()];
            while tokens.get(i + 1).is_some_and(|(_, t)| *t == "::")
                && tokens.get(i + 2).is_some_and(|(_, t)| is_ident(t))
            {
                path.push(tokens[i + 2].1.to_string());
                i += 2;
            }
            if let Some(target) = resolve(&path, offset) {
                out.push((
                    target,
                    format!("src/{}:{} {}", relative.display(), line(offset), path.join("::")),
                ));
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The rooms' import graph of a crate's sources: a reference from `from`
/// to `to` is an edge between the children of their common ancestor that
/// hold them, unless one contains the other.
fn import_graph(sources: &[(PathBuf, String)]) -> Graph {
    let modules: BTreeSet<Module> = sources.iter().map(|(relative, _)| module_of(relative)).collect();
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for (relative, text) in sources {
        let from = module_of(relative);
        for (to, witness) in references(relative, text, &modules) {
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue;
            }
            let edge = graph.entry(from[..=common].to_vec()).or_default();
            edge.entry(to[..=common].to_vec()).or_insert(witness);
        }
    }
    graph
}

/// A loop in the graph, as the rooms along it (the first one repeated at
/// the end), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        graph: &Graph,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The loop, each edge with the reference that makes it.
fn describe(cycle: &[Module], graph: &Graph) -> String {
    let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
    let mut text = format!("import loop: {}", names.join(" -> "));
    for pair in cycle.windows(2) {
        text.push_str(&format!(
            "\n  {} -> {}: {}",
            name(&pair[0]),
            name(&pair[1]),
            graph[&pair[0]][&pair[1]]
        ));
    }
    text
}

#[test]
fn the_modules_of_src_import_without_a_loop() {
    let graph = import_graph(&library_sources());
    let serve = vec!["serve".to_string()];
    let core = vec!["serve".to_string(), "core".to_string()];
    assert!(graph[&serve].contains_key(&vec!["engine".to_string()]), "{graph:#?}");
    assert!(!graph[&core].is_empty(), "the graph reads the modules inside a folder too: {graph:#?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{}", describe(&cycle, &graph));
    }
}

/// The check itself: a loop between two modules of one folder (the one
/// `serve::core` and `serve::metrics` once had), and one between two
/// folders made by modules deep inside them, are found and named; a
/// parent and its children naming each other, comments and strings are
/// not loops.
#[test]
fn the_loop_check_finds_loops_at_every_level_and_only_loops() {
    let source = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let siblings = [
        source("serve/mod.rs", "mod core;\nmod metrics;\nuse self::core::Core;"),
        source("serve/core.rs", "use super::metrics::Metrics;\npub struct Health;"),
        source("serve/metrics.rs", "use super::{core::Health, *};"),
    ];
    let graph = import_graph(&siblings);
    let cycle = find_cycle(&graph).expect("the loop between core and metrics");
    let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
    assert_eq!(names, ["serve::core", "serve::metrics", "serve::core"]);
    assert!(describe(&cycle, &graph).contains("src/serve/metrics.rs:1 super::core::Health"), "{graph:#?}");

    let across = [
        source("engine/mod.rs", "mod writer;\npub enum Reply {}"),
        source("engine/writer.rs", "fn f() { crate::serve::core::run(); }"),
        source("serve/mod.rs", "pub mod core;"),
        source("serve/core.rs", "use crate::engine::Reply;"),
    ];
    let graph = import_graph(&across);
    let names: Vec<String> = find_cycle(&graph).expect("engine <-> serve").iter().map(|m| name(m)).collect();
    assert_eq!(names, ["engine", "serve", "engine"]);

    let no_loop = [
        source("engine/mod.rs", "mod writer;\nuse writer::Writer;\npub enum Reply {}"),
        source(
            "engine/writer.rs",
            "use super::Reply;\n/// Not an import: crate::serve::core\nconst S: &str = \"crate::serve::x\";\n\
             const C: [char; 2] = ['{', '\\''];\n#[cfg(test)]\nmod tests {\n    use super::*;\n}",
        ),
        source("serve/mod.rs", "mod core;"),
        source("serve/core.rs", "use crate::engine::Reply;"),
    ];
    let graph = import_graph(&no_loop);
    assert_eq!(find_cycle(&graph), None, "{graph:#?}");
    let engine = vec!["engine".to_string()];
    assert!(graph[&engine].is_empty(), "{graph:#?}");
}

#[test]
fn the_engine_imports_no_layer_above_it() {
    let graph = import_graph(&library_sources());
    let imports = |module: &str| -> BTreeSet<String> {
        graph[&vec![module.to_string()]].keys().map(|m| name(m)).collect()
    };
    let above = ["apply", "audit", "bench", "cli", "demo", "notify", "report", "serve", "store"];
    for module in ["engine", "log", "projector"] {
        let imports = imports(module);
        let wrong: Vec<_> = above.iter().filter(|m| imports.contains(**m)).collect();
        assert!(wrong.is_empty(), "{module} imports {wrong:?}");
    }
    // The CLI only parses and dispatches: nothing below it names it.
    for module in graph.keys().filter(|m| m.len() == 1) {
        assert!(module[0] == "cli" || !imports(&module[0]).contains("cli"), "{} imports cli", name(module));
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
