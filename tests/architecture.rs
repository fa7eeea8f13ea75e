//! The crate's layering, checked from its sources: no module imports one that imports it back,
//! between files and between the top-level layers (`src/<layer>/` or `src/<layer>.rs`).
//!
//! A reference is any `crate::...` or `super::...` path outside comments and outside
//! `#[cfg(test)]` modules (tests may reach anywhere). A child module using its ancestors' items
//! is part of its folder and not an edge; a parent using its children is. The layers and who
//! may call whom are described in docs/DESIGN.md, "Architecture".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["pack", "codec"]`) of each source file of the library.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(src).unwrap().to_path_buf();
            if rel.starts_with("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            let last = parts.last().unwrap().clone();
            if last == "tests" {
                continue; // a `#[cfg(test)] mod tests;` file
            }
            if last == "mod" || (parts.len() == 1 && last == "lib") {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The source without comments and without `#[cfg(test)]` modules written inline.
fn code_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.ends_with('{'))
        {
            // Skip to the module's closing brace, at the indentation of its `mod` line.
            let open = lines.next().unwrap();
            let indent = open.len() - open.trim_start().len();
            let close = format!("{}}}", " ".repeat(indent));
            for l in lines.by_ref() {
                if l == close {
                    break;
                }
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push(match line.find("//") {
            Some(at) => line[..at].to_owned(),
            None => line.to_owned(),
        });
    }
    out
}

/// Every path a `crate::` or `super::` reference in `code` names, relative to the crate root
/// (`super` resolved against `module`). Brace groups are expanded.
fn references(code: &str, module: &[String]) -> Vec<Vec<String>> {
    fn path_at(s: &str) -> (Vec<String>, &str) {
        let mut parts = Vec::new();
        let mut rest = s;
        loop {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(rest[..end].to_owned());
            rest = &rest[end..];
            match rest.strip_prefix("::") {
                Some(r) if !r.starts_with('{') => rest = r,
                Some(r) => {
                    rest = r;
                    break;
                }
                None => break,
            }
        }
        (parts, rest)
    }
    fn group(s: &str) -> Vec<Vec<String>> {
        // `s` starts after `{`; items up to the matching `}`.
        let mut out = Vec::new();
        let mut depth = 0;
        let mut item = String::new();
        for c in s.chars() {
            match c {
                '{' => {
                    depth += 1;
                    item.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    item.push(c);
                }
                ',' if depth == 0 => {
                    out.extend(item_paths(item.trim()));
                    item.clear();
                }
                _ => item.push(c),
            }
        }
        out.extend(item_paths(item.trim()));
        out
    }
    fn item_paths(item: &str) -> Vec<Vec<String>> {
        if item.is_empty() {
            return Vec::new();
        }
        let (head, rest) = path_at(item);
        match rest.strip_prefix('{') {
            Some(inner) => group(inner)
                .into_iter()
                .map(|p| head.iter().cloned().chain(p).collect())
                .collect(),
            None => vec![head],
        }
    }
    let mut out = Vec::new();
    // `super` of `x::y` is `x`, whether `y` is `x/y.rs` or `x/y/mod.rs`.
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue; // `super::super::` is handled from the first one
            }
            let mut base = base.clone();
            let mut rest = &code[from..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            if let Some(r) = rest.strip_prefix('{') {
                for p in group(r) {
                    out.push(base.iter().cloned().chain(p).collect());
                }
                continue;
            }
            let (head, after) = path_at(rest);
            let full: Vec<String> = base.iter().cloned().chain(head.clone()).collect();
            if let Some(r) = after.strip_prefix('{') {
                for p in group(r) {
                    out.push(full.iter().cloned().chain(p).collect());
                }
            } else {
                out.push(full);
            }
        }
    }
    out
}

/// The module a path lies in: its longest prefix that is a module.
fn owner<'a>(path: &[String], mods: &'a BTreeMap<Vec<String>, PathBuf>) -> Option<&'a Vec<String>> {
    (0..=path.len())
        .rev()
        .find_map(|n| mods.get_key_value(&path[..n]).map(|(k, _)| k))
}

/// Cycles among `edges` (strongly connected components with more than one node).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for n in &nodes {
        if placed.contains(*n) || !reaches[n].contains(*n) {
            continue;
        }
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[n].contains(**m) && reaches[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        placed.extend(scc.iter().cloned());
        out.push(scc);
    }
    out
}

fn graphs() -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut layers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &mods {
        let text = std::fs::read_to_string(path).unwrap();
        let code = code_lines(&text).join("\n");
        for r in references(&code, module) {
            let Some(to) = owner(&r, &mods) else { continue };
            if to == module || module.starts_with(to) {
                continue;
            }
            let name = |m: &Vec<String>| {
                if m.is_empty() {
                    "lib".to_owned()
                } else {
                    m.join("::")
                }
            };
            files.entry(name(module)).or_default().insert(name(to));
            if let (Some(a), Some(b)) = (module.first(), to.first())
                && a != b
            {
                layers.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    (files, layers)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let (files, _) = graphs();
    // The checker itself must see the crate's imports, or it proves nothing.
    assert!(
        files
            .get("write::upload")
            .is_some_and(|to| to.contains("chunk")),
        "the import graph looks empty: {files:?}"
    );
    let found = cycles(&files);
    assert!(found.is_empty(), "module cycles: {found:?}");
}

#[test]
fn no_layer_imports_one_that_imports_it_back() {
    let (_, layers) = graphs();
    let found = cycles(&layers);
    assert!(
        found.is_empty(),
        "layer cycles: {found:?}\nlayer graph: {layers:#?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_and_resolves_paths() {
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let refs = references(
        "use crate::a::{b::C, d};\nuse super::{e, f::{G, h}};",
        &m("x::y"),
    );
    assert_eq!(
        refs,
        vec![
            m("a::b::C"),
            m("a::d"),
            m("x::e"),
            m("x::f::G"),
            m("x::f::h")
        ]
    );
    let code = code_lines(
        "// crate::z\nuse crate::q;\n#[cfg(test)]\nmod tests {\n    use crate::t;\n}\nuse crate::r;",
    );
    assert_eq!(code.join("\n"), "use crate::q;\nuse crate::r;");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(cycles(&g).is_empty());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
}
