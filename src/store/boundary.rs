//! `store` is the only module that knows Redis: no source file outside
//! `src/store/` names the Redis client crate (`fred::...`, `use fred`).
//! Strings that mention it (the log filter `"fred=error"`) are fine;
//! `examples/` (the benchmark floor, fred on purpose) and `tests/` (raw
//! access to check what scripts wrote) are not the library.

use std::path::{Path, PathBuf};

/// TEMPORARY exceptions: the hand-written event-stream reader of the
/// benchmark, which the store's typed event reader replaces. Each entry is a
/// file and the items (a `fn ...(` whose whole body is exempt, or an exact
/// line) that may name the client until then. An exception that no longer
/// matches fails the test: remove it.
const TEMPORARY_EXCEPTIONS: &[(&str, &[&str])] = &[(
    "src/bench.rs",
    &[
        "fn read_completed(",
        "fn stream_entries(",
        "use fred::prelude::*;",
        "use fred::types::Value;",
    ],
)];

/// Every `.rs` file under `dir`.
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

/// Where the item starting at `start` (a `fn`) ends: after the brace that
/// closes its body (braces inside string literals do not count).
fn item_end(source: &str, start: usize) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in source[start..].char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return start + i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces after byte {start}");
}

/// `source` without the exempt items; panics when one is not found.
fn without_exceptions(file: &str, source: &str, items: &[&str]) -> String {
    let mut text = source.to_string();
    for item in items {
        let start = text.find(item).unwrap_or_else(|| {
            panic!("temporary exception `{item}` in {file} no longer matches: remove it")
        });
        let end = if item.starts_with("fn ") {
            item_end(&text, start)
        } else {
            start + item.len()
        };
        text.replace_range(start..end, "");
    }
    text
}

/// The lines of `source` that name the client crate as a path or a
/// dependency (not inside a longer identifier, not as `fred=` in a string).
fn lines_naming_the_client(source: &str) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    source
        .lines()
        .filter(|line| {
            line.match_indices("fred").any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = &line[i + "fred".len()..];
                if before.is_some_and(ident) || after.chars().next().is_some_and(ident) {
                    return false;
                }
                let head = line[..i].trim_end();
                after.trim_start().starts_with("::")
                    || head.ends_with("use")
                    || head.ends_with("crate")
            })
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_check_sees_every_way_of_naming_the_client() {
    for named in [
        "use fred::prelude::*;",
        "    let v: fred::types::Value = x;",
        "fn f(p: &::fred :: clients::Pool) {}",
        "extern crate fred;",
        "use fred as redis;",
        "let _ = fred::cmd!(\"INFO\");",
    ] {
        assert_eq!(lines_naming_the_client(named).len(), 1, "{named}");
    }
    for fine in [
        "EnvFilter::new(\"info,fred=error\")",
        "// fred logs every dropped connection at WARN",
        "use frederick::x; let alfred = 1;",
    ] {
        assert!(lines_naming_the_client(fine).is_empty(), "{fine}");
    }
    let exempt = "fn a() {\n    let s = \"}\";\n    fred::x();\n}\nfn b() {}\n";
    assert_eq!(without_exceptions("f", exempt, &["fn a("]), "\nfn b() {}\n");
}

#[test]
fn no_module_outside_store_names_the_redis_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let store = root.join("src").join("store");
    let mut offenders = Vec::new();
    for path in files.iter().filter(|p| !p.starts_with(&store)) {
        let file = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(path).unwrap();
        let source = match TEMPORARY_EXCEPTIONS.iter().find(|(f, _)| *f == file) {
            Some((_, items)) => without_exceptions(&file, &source, items),
            None => source,
        };
        for line in lines_naming_the_client(&source) {
            offenders.push(format!("{file}: {}", line.trim()));
        }
    }
    assert!(
        files.len() > 20,
        "walked only {} files under src/",
        files.len()
    );
    assert!(
        offenders.is_empty(),
        "only src/store/ may name the Redis client (fred):\n{}",
        offenders.join("\n")
    );
}
