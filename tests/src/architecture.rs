//! The workspace's structure as data: which source file imports which, per crate, so that the
//! layering rules (`tests/tests/architecture.rs`) are checked on every run instead of read
//! off a one-time review.
//!
//! A file *imports* another when it names an item defined there: through a `use` tree or a
//! qualified path (`crate::…`, `super::…`, `self::…`, or a child module's name). Re-exports
//! are followed to the file that defines the item, so `crate::Managers` re-exported by
//! `lib.rs` from `dispatch.rs` counts as an import of `dispatch.rs`, not of `lib.rs`.
//! Declaring a child module (`mod foo;`) and re-exporting (`pub use`) are not imports, and
//! neither is anything compiled only for tests (`#[cfg(test)]`): tests sit above the code they
//! test. Paths inside macro invocations are not seen (syn keeps them as tokens); that misses
//! edges, it never invents one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// One module of a crate: the file it lives in, what it defines, and what its `use`
/// declarations bring into scope.
#[derive(Debug, Default)]
struct Module {
    file: PathBuf,
    /// Names of items defined in the module (fn, struct, enum, trait, const, macro...).
    items: BTreeSet<String>,
    /// Child modules, by name.
    children: BTreeSet<String>,
    /// `use` names: the name in scope → the absolute path it stands for.
    uses: HashMap<String, Vec<String>>,
    /// Targets of glob imports (`use foo::*`), absolute.
    globs: Vec<Vec<String>>,
}

/// The module tree of one crate (a library, a binary, a `src/bin` program).
#[derive(Debug, Default)]
pub struct CrateGraph {
    /// The crate's name and kind, for messages (`hardware-managers (lib)`).
    pub name: String,
    modules: BTreeMap<Vec<String>, Module>,
    /// file → files it imports → the paths (as written, made absolute) that import them.
    pub edges: BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>,
}

/// Parses the crate whose root file is `root` (lib.rs, main.rs, or a bin file).
pub fn crate_graph(name: &str, root: &Path) -> Result<CrateGraph, String> {
    let mut graph = CrateGraph {
        name: name.to_string(),
        ..CrateGraph::default()
    };
    let mut files: Vec<(Vec<String>, PathBuf, syn::File)> = Vec::new();
    load(&mut graph, &mut files, Vec::new(), root)?;
    for (path, file, ast) in &files {
        let mut v = Refs {
            graph: &graph,
            module: path.clone(),
            found: Vec::new(),
        };
        v.visit_file(ast);
        let mut targets: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        for abs in &v.found {
            if let Some(t) = graph.resolve(abs, 0).filter(|t| t != file) {
                let shown = graph.make_absolute(abs).unwrap_or_default().join("::");
                targets.entry(t).or_default().insert(shown);
            }
        }
        let entry = graph.edges.entry(file.clone()).or_default();
        for (t, via) in targets {
            entry.entry(t).or_default().extend(via);
        }
    }
    Ok(graph)
}

/// Reads `file` as module `path` and, recursively, the files of its `mod foo;` children.
fn load(
    graph: &mut CrateGraph,
    files: &mut Vec<(Vec<String>, PathBuf, syn::File)>,
    path: Vec<String>,
    file: &Path,
) -> Result<(), String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let ast = syn::parse_file(&text).map_err(|e| format!("parsing {}: {e}", file.display()))?;
    let mut children = Vec::new();
    collect(graph, &path, file, &ast.items, &mut children);
    files.push((path.clone(), file.to_path_buf(), ast));
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = match stem {
        "mod" | "lib" | "main" => file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        // A `src/bin/x.rs` program's children live in `src/bin/x/`, as any other file's.
        _ => file.with_extension(""),
    };
    for (child_path, explicit) in children {
        let name = child_path.last().cloned().unwrap_or_default();
        let child_file = match explicit {
            Some(p) => file.parent().unwrap_or(Path::new(".")).join(p),
            None => {
                let flat = dir.join(format!("{name}.rs"));
                if flat.exists() {
                    flat
                } else {
                    dir.join(&name).join("mod.rs")
                }
            }
        };
        load(graph, files, child_path, &child_file)?;
    }
    Ok(())
}

/// Records the items of module `path` (and of its inline modules); returns the out-of-line
/// child modules to load, with a `#[path]` if they have one.
fn collect(
    graph: &mut CrateGraph,
    path: &[String],
    file: &Path,
    items: &[syn::Item],
    out_of_line: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut module = Module {
        file: file.to_path_buf(),
        ..Module::default()
    };
    for item in items {
        let name = match item {
            syn::Item::Const(i) => Some(i.ident.to_string()),
            syn::Item::Enum(i) => Some(i.ident.to_string()),
            syn::Item::Fn(i) => Some(i.sig.ident.to_string()),
            syn::Item::Macro(i) => i.ident.as_ref().map(|i| i.to_string()),
            syn::Item::Static(i) => Some(i.ident.to_string()),
            syn::Item::Struct(i) => Some(i.ident.to_string()),
            syn::Item::Trait(i) => Some(i.ident.to_string()),
            syn::Item::TraitAlias(i) => Some(i.ident.to_string()),
            syn::Item::Type(i) => Some(i.ident.to_string()),
            syn::Item::Union(i) => Some(i.ident.to_string()),
            syn::Item::Mod(m) => {
                let name = m.ident.to_string();
                let mut child = path.to_vec();
                child.push(name.clone());
                module.children.insert(name);
                match &m.content {
                    Some((_, inner)) => collect(graph, &child, file, inner, out_of_line),
                    None => out_of_line.push((child, path_attr(&m.attrs))),
                }
                None
            }
            syn::Item::Use(u) => {
                use_tree(path, &[], &u.tree, &mut module);
                None
            }
            _ => None,
        };
        if let Some(n) = name {
            module.items.insert(n);
        }
    }
    graph.modules.insert(path.to_vec(), module);
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Adds the names a `use` tree brings into `module` (at module path `at`); `prefix` is the
/// part of the path above `tree`. Paths stay as written (`super`, `crate`...) and are made
/// absolute when resolved.
fn use_tree(at: &[String], prefix: &[String], tree: &syn::UseTree, module: &mut Module) {
    let mut path = prefix.to_vec();
    match tree {
        syn::UseTree::Path(p) => {
            path.push(p.ident.to_string());
            use_tree(at, &path, &p.tree, module);
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                if let Some(last) = path.last().cloned() {
                    module.uses.insert(last, absolute_in(at, &path));
                }
            } else {
                path.push(name.clone());
                module.uses.insert(name, absolute_in(at, &path));
            }
        }
        syn::UseTree::Rename(r) => {
            path.push(r.ident.to_string());
            module
                .uses
                .insert(r.rename.to_string(), absolute_in(at, &path));
        }
        syn::UseTree::Glob(_) => module.globs.push(absolute_in(at, &path)),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_tree(at, &path, t, module);
            }
        }
    }
}

/// `path` as written in module `at`, with `crate`/`self`/`super` replaced: the result starts
/// with `crate` for paths into this crate; other paths (extern crates) are kept as they are
/// and later resolve to nothing, unless their first segment is a child module of `at`.
fn absolute_in(at: &[String], path: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec!["crate".into()];
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            out.extend(at.iter().cloned());
            rest = &path[1..];
        }
        Some("super") => {
            let mut base = at.to_vec();
            while let Some("super") = rest.first().map(String::as_str) {
                base.pop();
                rest = &rest[1..];
            }
            out.extend(base);
        }
        // Relative to the module (a child module's name), or an extern crate: mark it
        // relative; `CrateGraph::resolve` decides.
        _ => {
            let mut rel = vec!["<relative>".to_string()];
            rel.extend(at.iter().cloned());
            rel.push("<path>".into());
            rel.extend(path.iter().cloned());
            return rel;
        }
    }
    out.extend(rest.iter().cloned());
    out
}

impl CrateGraph {
    /// The file that defines what `abs` names, following re-exports; `None` outside the crate.
    fn resolve(&self, abs: &[String], depth: usize) -> Option<PathBuf> {
        if depth > 16 {
            return None;
        }
        let abs = self.make_absolute(abs)?;
        let mut module: Vec<String> = Vec::new();
        for seg in &abs[1..] {
            let current = self.modules.get(&module)?;
            if current.children.contains(seg) {
                module.push(seg.clone());
                continue;
            }
            if current.items.contains(seg) {
                return Some(current.file.clone());
            }
            if let Some(target) = current.uses.get(seg) {
                // Into this crate: where the item is defined; an extern crate's item: none.
                return self.resolve(target, depth + 1);
            }
            for glob in &current.globs {
                let mut candidate = glob.clone();
                candidate.push(seg.clone());
                if let Some(f) = self.resolve(&candidate, depth + 1) {
                    return Some(f);
                }
            }
            // An enum variant, an associated item, or something a macro defined: the module
            // we reached is where it lives.
            return Some(current.file.clone());
        }
        self.modules.get(&module).map(|m| m.file.clone())
    }

    /// Turns a relative path (`<relative> at… <path> seg…`) into a `crate` path when its
    /// first segment is a child module or a `use` name of the module it was written in.
    fn make_absolute(&self, path: &[String]) -> Option<Vec<String>> {
        if path.first().map(String::as_str) != Some("<relative>") {
            return Some(path.to_vec());
        }
        let split = path.iter().position(|s| s == "<path>")?;
        let at = &path[1..split];
        let rest = &path[split + 1..];
        let first = rest.first()?;
        let module = self.modules.get(at)?;
        if module.children.contains(first) || module.items.contains(first) {
            let mut abs = vec!["crate".to_string()];
            abs.extend(at.iter().cloned());
            abs.extend(rest.iter().cloned());
            return Some(abs);
        }
        if let Some(target) = module.uses.get(first) {
            let mut abs = self.make_absolute(target)?;
            abs.extend(rest[1..].iter().cloned());
            return Some(abs);
        }
        None
    }

    /// The imports between the files of `group`, one line each: `from → to: path, path`.
    pub fn describe(&self, group: &[PathBuf], strip: &Path) -> Vec<String> {
        let show = |p: &Path| p.strip_prefix(strip).unwrap_or(p).display().to_string();
        let mut lines = Vec::new();
        for from in group {
            for (to, via) in self.edges.get(from).into_iter().flatten() {
                if group.contains(to) {
                    let via: Vec<&str> = via.iter().map(String::as_str).take(3).collect();
                    lines.push(format!("{} → {}: {}", show(from), show(to), via.join(", ")));
                }
            }
        }
        lines
    }

    /// Groups of files that import each other in a circle (strongly connected components of
    /// more than one file), each sorted, for messages.
    pub fn cycles(&self) -> Vec<Vec<PathBuf>> {
        let nodes: Vec<&PathBuf> = self.edges.keys().collect();
        let index: HashMap<&PathBuf, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adj: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges[*n]
                    .keys()
                    .filter_map(|t| index.get(t).copied())
                    .collect()
            })
            .collect();
        tarjan(&adj)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut files: Vec<PathBuf> = c.into_iter().map(|i| nodes[i].clone()).collect();
                files.sort();
                files
            })
            .collect()
    }
}

/// Collects the paths a file names, made absolute in the module they appear in.
struct Refs<'a> {
    graph: &'a CrateGraph,
    module: Vec<String>,
    found: Vec<Vec<String>>,
}

/// Whether an item is compiled only for tests (`#[cfg(test)]`).
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if let Some((_, items)) = &m.content {
            self.module.push(m.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        // A re-export (`pub use child::Item`) routes a name; the file's own code does not
        // depend on it, and paths through it are followed to the defining file anyway.
        if !matches!(u.vis, syn::Visibility::Inherited) {
            return;
        }
        let mut m = Module::default();
        use_tree(&self.module, &[], &u.tree, &mut m);
        self.found.extend(m.uses.into_values());
        self.found.extend(m.globs);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 && p.leading_colon.is_none() {
            let abs = absolute_in(&self.module, &segs);
            if self.graph.make_absolute(&abs).is_some() {
                self.found.push(abs);
            }
        }
        syn::visit::visit_path(self, p);
    }
}

/// Tarjan's strongly connected components.
fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.adj[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = adj.len();
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A workspace member: its directory and package name.
#[derive(Debug, Clone)]
pub struct Member {
    pub dir: PathBuf,
    pub package: String,
}

/// The members of the workspace at `root`, from its `Cargo.toml`.
pub fn members(root: &Path) -> Result<Vec<Member>, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("reading {}: {e}", p.display()))
            .and_then(|t| {
                t.parse::<toml::Table>()
                    .map_err(|e| format!("parsing {}: {e}", p.display()))
            })
    };
    let ws = read(&root.join("Cargo.toml"))?;
    let list = ws
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .ok_or("no [workspace] members")?;
    list.iter()
        .filter_map(|v| v.as_str())
        .map(|m| {
            let dir = root.join(m);
            let manifest = read(&dir.join("Cargo.toml"))?;
            let package = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("{m}/Cargo.toml has no package name"))?
                .to_string();
            Ok(Member { dir, package })
        })
        .collect()
}

/// The crates of a member: its library, its main binary and its `src/bin` programs.
pub fn crate_roots(member: &Member) -> Vec<(String, PathBuf)> {
    let src = member.dir.join("src");
    let mut roots = Vec::new();
    for (file, kind) in [("lib.rs", "lib"), ("main.rs", "bin")] {
        if src.join(file).exists() {
            roots.push((format!("{} ({kind})", member.package), src.join(file)));
        }
    }
    if let Ok(entries) = std::fs::read_dir(src.join("bin")) {
        let mut bins: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        bins.sort();
        for b in bins {
            let stem = b
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("?")
                .to_string();
            roots.push((format!("{} (bin {stem})", member.package), b));
        }
    }
    roots
}

/// The dependencies (not dev-dependencies) a member's `Cargo.toml` names.
pub fn dependencies(member: &Member) -> Result<BTreeSet<String>, String> {
    let path = member.dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let manifest: toml::Table = text
        .parse()
        .map_err(|e| format!("parsing {}: {e}", path.display()))?;
    Ok(manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn graph(files: &[(&str, &str)]) -> (tempfile::TempDir, CrateGraph) {
        let dir = tempfile::tempdir().unwrap();
        for (f, t) in files {
            write(dir.path(), f, t);
        }
        let g = crate_graph("fixture", &dir.path().join("lib.rs")).unwrap();
        (dir, g)
    }

    fn names(g: &CrateGraph, dir: &Path) -> Vec<Vec<String>> {
        g.cycles()
            .into_iter()
            .map(|c| {
                c.iter()
                    .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_loop_through_use_and_qualified_paths_is_found() {
        let (dir, g) = graph(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "pub struct B;\nfn f() { let _ = super::a::A; }\n"),
        ]);
        assert_eq!(names(&g, dir.path()), vec![vec!["a.rs", "b.rs"]]);
    }

    #[test]
    fn re_exports_lead_to_the_defining_file_not_the_root() {
        // lib.rs re-exports a::A and uses b; b names crate::A: b imports a, not lib.rs.
        let (dir, g) = graph(&[
            ("lib.rs", "mod a;\nmod b;\npub use a::A;\npub use b::run;\n"),
            ("a.rs", "pub struct A;\n"),
            ("b.rs", "use crate::A;\npub fn run() {}\n"),
        ]);
        assert!(g.cycles().is_empty(), "{:?}", names(&g, dir.path()));
        let b = dir.path().join("b.rs");
        assert_eq!(
            g.edges[&b].keys().collect::<Vec<_>>(),
            vec![&dir.path().join("a.rs")]
        );
    }

    #[test]
    fn a_child_using_its_parent_and_the_parent_using_it_is_a_loop() {
        let (dir, g) = graph(&[
            ("lib.rs", "pub mod m;\n"),
            ("m/mod.rs", "mod c;\npub struct P;\nfn f() { c::g(); }\n"),
            ("m/c.rs", "use super::P;\npub fn g() {}\n"),
        ]);
        assert_eq!(names(&g, dir.path()), vec![vec!["m/c.rs", "m/mod.rs"]]);
    }

    #[test]
    fn tests_in_a_sibling_file_and_extern_crates_are_not_loops() {
        let (dir, g) = graph(&[
            ("lib.rs", "mod q;\n"),
            (
                "q/mod.rs",
                "use std::io;\nuse serde::Serialize;\npub fn f() {}\n#[cfg(test)]\nmod tests;\n",
            ),
            ("q/tests.rs", "use super::*;\n#[test]\nfn t() { f(); }\n"),
        ]);
        assert!(g.cycles().is_empty(), "{:?}", names(&g, dir.path()));
    }
}
