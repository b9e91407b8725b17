//! `store` is the only module that knows Redis: no source file outside
//! `src/store/` names the Redis client crate (`fred::...`, `use fred`).
//! Strings that mention it (the log filter `"fred=error"`) are fine;
//! `examples/` (the benchmark floor, fred on purpose) and `tests/` (raw
//! access to check what scripts wrote) are not the library.

use std::path::{Path, PathBuf};

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
