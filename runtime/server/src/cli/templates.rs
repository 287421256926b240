//! The plugin project templates, built into the binary so that
//! `weir plugin new` works wherever the binary is, without the repository.
//!
//! The lists name every file of each directory; a test checks them against
//! the repository, so a file added there and not here fails the build's
//! tests instead of going missing from new projects.

/// A file built into the binary.
pub(crate) struct EmbeddedFile {
    /// Its path within its directory, with `/` separators.
    pub(crate) path: &'static str,
    /// Its contents.
    pub(crate) text: &'static str,
    /// Whether it is a script to make executable.
    pub(crate) executable: bool,
}

/// The files of `$dir` (relative to the repository root), each `$file` or
/// `$file => exec` for an executable.
macro_rules! embed {
    ($dir:literal: $($file:literal $(=> $exec:ident)?),* $(,)?) => {
        &[$(EmbeddedFile {
            path: $file,
            text: include_str!(concat!("../../../../", $dir, "/", $file)),
            executable: embed!(@exec $($exec)?),
        }),*]
    };
    (@exec exec) => { true };
    (@exec) => { false };
}

/// `plugins/templates/rust/`: `{{name}}` and `{{crate_name}}` are
/// substituted.
pub(crate) static RUST_TEMPLATE: &[EmbeddedFile] = embed!("plugins/templates/rust":
    ".cargo/config.toml",
    "Cargo.toml",
    "README.md",
    "events.jsonl",
    "src/lib.rs",
);

/// The Rust SDK crate (`plugins/sdk/`, less its `wit` link), copied as it is.
pub(crate) static RUST_SDK: &[EmbeddedFile] = embed!("plugins/sdk":
    "Cargo.toml",
    "src/bindings.rs",
    "src/config.rs",
    "src/event.rs",
    "src/host.rs",
    "src/lib.rs",
    "src/log.rs",
    "src/runtime.rs",
    "src/table.rs",
    "src/testing.rs",
    "src/value.rs",
);

/// `plugins/Cargo.lock`: a new Rust project starts from the dependency
/// versions the repository is tested with.
pub(crate) static PLUGINS_CARGO_LOCK: &str = include_str!("../../../../plugins/Cargo.lock");

/// `plugins/templates/python/`: `{{name}}` and `{{module_name}}` are
/// substituted.
pub(crate) static PYTHON_TEMPLATE: &[EmbeddedFile] = embed!("plugins/templates/python":
    ".gitignore",
    "README.md",
    "build.sh" => exec,
    "events.jsonl",
    "plugin.py",
    "test_plugin.py",
);

/// The Python helper module (`plugins/python/weir_plugin/`), copied as it is.
pub(crate) static PYTHON_HELPER: &[EmbeddedFile] = embed!("plugins/python/weir_plugin":
    "__init__.py",
    "_wit.py",
    "testing.py",
);

/// The Python toolchain's installer (`plugins/python/toolchain/`), copied
/// as it is: a project's build.sh installs what it builds with.
pub(crate) static PYTHON_TOOLCHAIN: &[EmbeddedFile] = embed!("plugins/python/toolchain":
    "install.sh" => exec,
);

/// `plugins/templates/js/`: `{{name}}` and `{{module_name}}` are
/// substituted.
pub(crate) static JS_TEMPLATE: &[EmbeddedFile] = embed!("plugins/templates/js":
    ".gitignore",
    "README.md",
    "build.sh" => exec,
    "events.jsonl",
    "package.json",
    "plugin.js",
    "plugin.test.js",
);

/// The JavaScript helper module (`plugins/js/weir_plugin/`), copied as it is.
pub(crate) static JS_HELPER: &[EmbeddedFile] = embed!("plugins/js/weir_plugin":
    "build.mjs",
    "index.js",
    "testing.js",
);

/// The JavaScript toolchain's installer and the tree it installs
/// (`plugins/js/toolchain/`), copied as they are.
pub(crate) static JS_TOOLCHAIN: &[EmbeddedFile] = embed!("plugins/js/toolchain":
    "install.sh" => exec,
    "package-lock.json",
    "package.json",
);

/// The contract, `wit/weir-cdc.wit`.
pub(crate) static WIT: &str = include_str!("../../../../wit/weir-cdc.wit");

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every file under `dir` (skipping Python's caches and the SDK's
    /// `wit` link, which is written separately), with whether it is
    /// executable.
    fn files_in(dir: &Path) -> BTreeMap<String, bool> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, bool>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                let path = entry.path();
                let kind = entry.file_type().unwrap();
                if name == "__pycache__" || name == "wit" && kind.is_symlink() {
                    continue;
                }
                if kind.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                    out.insert(rel.replace('\\', "/"), mode & 0o111 != 0);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    }

    #[test]
    fn the_lists_name_every_file_of_their_directory() {
        for (dir, list) in [
            ("plugins/templates/rust", RUST_TEMPLATE),
            ("plugins/sdk", RUST_SDK),
            ("plugins/templates/python", PYTHON_TEMPLATE),
            ("plugins/python/weir_plugin", PYTHON_HELPER),
            ("plugins/python/toolchain", PYTHON_TOOLCHAIN),
            ("plugins/templates/js", JS_TEMPLATE),
            ("plugins/js/weir_plugin", JS_HELPER),
            ("plugins/js/toolchain", JS_TOOLCHAIN),
        ] {
            let on_disk = files_in(&repo().join(dir));
            let embedded: BTreeMap<String, bool> = list
                .iter()
                .map(|f| (f.path.to_owned(), f.executable))
                .collect();
            assert_eq!(
                embedded, on_disk,
                "the files of {dir} changed: update the list in runtime/server/src/cli/templates.rs"
            );
        }
    }

    #[test]
    fn templates_use_only_known_placeholders() {
        for (list, known) in [
            (RUST_TEMPLATE, &["{{name}}", "{{crate_name}}"]),
            (PYTHON_TEMPLATE, &["{{name}}", "{{module_name}}"]),
            (JS_TEMPLATE, &["{{name}}", "{{module_name}}"]),
        ] {
            for file in list {
                let mut text = file.text.to_owned();
                for placeholder in known {
                    text = text.replace(placeholder, "");
                }
                assert!(
                    !text.contains("{{"),
                    "{}: a placeholder other than {known:?} is left",
                    file.path
                );
            }
        }
    }
}
