//! The map of docs/architecture.md ("Layers"), held against the code: each module of `src/`
//! names only the modules below it, everything above the storage engine reaches it through
//! `store`, and only `fs/` touches the file system directly (with the exceptions listed here,
//! each with its reason; the list may only shrink).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of the crate and the crate modules it may name. Read bottom-up: the
/// engine (`fs` … `store`), then what is built on it.
const LAYERS: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("fault", &[]),
    ("fs", &[]),
    ("image", &["clock", "fault", "fs"]),
    ("log", &["clock", "fault", "fs", "image"]),
    ("index", &["clock", "fault", "fs", "image", "log"]),
    ("chain", &["clock", "log"]),
    (
        "store",
        &["chain", "clock", "fault", "fs", "image", "index", "log"],
    ),
    // Above the engine: only `store` (and the plain modules beside it), never `log`, `index` or
    // `fs`. `fault` is allowed where crash points mark steps of a backup.
    ("token", &["clock", "config"]),
    ("config", &["clock", "store", "token"]),
    ("backup", &["clock", "config", "fault", "store"]),
    (
        "api",
        &["backup", "chain", "clock", "config", "store", "token"],
    ),
    // The HTTP client stands alone: it knows the API's wire format, not the server's code.
    ("client", &[]),
    (
        "cli",
        &[
            "api", "backup", "chain", "client", "clock", "config", "store", "token",
        ],
    ),
];

/// Files outside `src/fs/` that may use `std::fs`, with how many mentions each holds at most.
/// Files that read configuration, certificates or a CLI's input are not storage: they keep the
/// real file system. The storage files listed are debt: the seam does not reach them yet
/// (docs/architecture.md, "The file-system seam"); their counts may only go down.
const STD_FS_ALLOWED: &[(&str, usize, &str)] = &[
    ("src/config.rs", 3, "reads the configuration file"),
    ("src/api/tls.rs", 2, "reads certificates and keys"),
    (
        "src/client/mod.rs",
        2,
        "reads the CA file named on the command line",
    ),
    (
        "src/cli/client.rs",
        1,
        "reads files named on the command line",
    ),
    (
        "src/cli/backup.rs",
        2,
        "reads files named on the command line",
    ),
    (
        "src/backup/repo.rs",
        10,
        "the directory repository is a repository backend, not the store",
    ),
    (
        "src/backup/create.rs",
        1,
        "maps sealed files to upload them",
    ),
    (
        "src/backup/manifest.rs",
        1,
        "maps sealed files to hash them",
    ),
    (
        "src/backup/verify.rs",
        1,
        "scratch directory of a deep verify",
    ),
    ("src/backup/restore.rs", 8, "stages downloaded files"),
    (
        "src/store/restore.rs",
        8,
        "debt: restore writes its target directly",
    ),
    (
        "src/store/maintenance.rs",
        1,
        "debt: reads an image frame with pread",
    ),
    (
        "src/store/mod.rs",
        1,
        "debt: reads an unsealed record with pread",
    ),
    ("src/index/mod.rs", 1, "debt: the index directory"),
    (
        "src/index/maps.rs",
        2,
        "debt: segment mappings need real files",
    ),
    ("src/index/files.rs", 6, "debt: index files are mapped"),
    ("src/image.rs", 1, "debt: images are read whole"),
    (
        "src/log/verify.rs",
        2,
        "debt: offline verify reads segments directly",
    ),
];

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

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The code of a file without its comments (line comments and doc comments; block comments are
/// not used in this crate).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// Every crate module a line names: `crate::name` and `use crate::{a, b::c}`.
fn named_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.strip_prefix(root).unwrap().to_path_buf(), text)
        })
        .collect()
}

#[test]
fn modules_name_only_the_layers_below_them() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    for (path, text) in sources() {
        let Some(module) = module_of(path.strip_prefix("src").unwrap()) else {
            continue;
        };
        let allowed = layers
            .get(module.as_str())
            .unwrap_or_else(|| panic!("{}: module {module} is not on the map", path.display()));
        for (line_no, line) in code_lines(&text) {
            for named in named_modules(line) {
                if named != module && !allowed.contains(&named.as_str()) {
                    violations.push(format!(
                        "{}:{line_no}: {module} names crate::{named}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layer map (tests/cli/architecture.rs, docs/architecture.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn only_the_fs_seam_touches_the_file_system() {
    let allowed: BTreeMap<&str, usize> = STD_FS_ALLOWED.iter().map(|(p, n, _)| (*p, *n)).collect();
    let mut violations = Vec::new();
    for (path, text) in sources() {
        let display = path.display().to_string();
        if display.starts_with("src/fs/") {
            continue;
        }
        let mentions = code_lines(&text)
            .filter(|(_, line)| line.contains("std::fs"))
            .count();
        let limit = allowed.get(display.as_str()).copied().unwrap_or(0);
        if mentions > limit {
            violations.push(format!(
                "{display}: {mentions} lines name std::fs (allowed: {limit}); go through crate::fs"
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_map_checks_itself() {
    assert_eq!(
        named_modules("use crate::{clock::now_us, store::Store};"),
        ["clock", "store"]
    );
    assert_eq!(named_modules("let x = crate::log::Log::open(a);"), ["log"]);
    assert!(code_lines("// crate::api\n").next().is_none());
}
