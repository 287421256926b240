//! `weir plugin new`: writes a new plugin project from the templates built
//! into the binary (`scripts/check-templates` proves each builds, passes its
//! tests and runs in Weir):
//!
//! * Rust: the template with `{{name}}` (the name) and `{{crate_name}}`
//!   (the name in snake_case) substituted; the SDK crate in
//!   `NAME/weir-plugin-sdk/` with the contract as a real file at
//!   `NAME/weir-plugin-sdk/wit/weir-cdc.wit`; and `NAME/Cargo.lock` from the
//!   repository's plugins, so the project builds with the dependency
//!   versions Weir is tested with.
//! * Python and JavaScript: the template with `{{name}}` and
//!   `{{module_name}}` (the name in snake_case) substituted; the helper
//!   module in `NAME/weir_plugin/`; the toolchain's installer (which
//!   `build.sh` runs) in `NAME/toolchain/`; the contract at
//!   `NAME/wit/weir-cdc.wit`.
//!
//! Every template holds an `events.jsonl` of changes its example plugin
//! does and does not touch, for the printed `weir plugin test` step.
//!
//! Only template files are substituted; the SDK, helpers and contract are
//! copied as they are.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Lang;
use super::templates::{
    EmbeddedFile, JS_HELPER, JS_TEMPLATE, JS_TOOLCHAIN, PLUGINS_CARGO_LOCK, PYTHON_HELPER,
    PYTHON_TEMPLATE, PYTHON_TOOLCHAIN, RUST_SDK, RUST_TEMPLATE, WIT,
};

/// Runs `weir plugin new`: creates `parent/name` and prints the next steps.
pub fn run(lang: Lang, name: &str, parent: &Path) -> anyhow::Result<()> {
    let project = create(lang, name, parent)?;
    print!("{}", next_steps(lang, name, &project));
    Ok(())
}

/// Writes the project `parent/name` and returns its path. Refuses a name
/// that is not a plugin name and a directory that exists already; a project
/// that could not be written whole is removed again.
pub fn create(lang: Lang, name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(lang, name)?;
    let files = project_files(lang, name);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create the directory {}", parent.display()))?;
    let project = parent.join(name);
    // `create_dir` rather than a check first: it fails on anything already
    // there, even something made a moment ago.
    if let Err(e) = std::fs::create_dir(&project) {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "{} already exists; choose another name or --dir, or remove it first \
                 (weir plugin new never overwrites anything)",
                project.display()
            );
        }
        return Err(e).with_context(|| format!("cannot create {}", project.display()));
    }
    if let Err(e) = write_files(&project, &files) {
        // Only what this run created is removed: the directory did not
        // exist before.
        let _ = std::fs::remove_dir_all(&project);
        return Err(e);
    }
    Ok(project)
}

/// A file of the new project: path within it, contents, executable or not.
struct ProjectFile {
    path: String,
    text: String,
    executable: bool,
}

fn project_files(lang: Lang, name: &str) -> Vec<ProjectFile> {
    let snake = name.replace('-', "_");
    let substituted = |template: &[EmbeddedFile], placeholders: &[(&str, &str)]| {
        template
            .iter()
            .map(|f| {
                let mut text = f.text.to_owned();
                for (placeholder, value) in placeholders {
                    text = text.replace(placeholder, value);
                }
                ProjectFile {
                    path: f.path.to_owned(),
                    text,
                    executable: f.executable,
                }
            })
            .collect::<Vec<_>>()
    };
    let copied = |files: &[EmbeddedFile], dir: &str| {
        files
            .iter()
            .map(|f| ProjectFile {
                path: format!("{dir}/{}", f.path),
                text: f.text.to_owned(),
                executable: f.executable,
            })
            .collect::<Vec<_>>()
    };
    let wit = |path: &str| ProjectFile {
        path: path.to_owned(),
        text: WIT.to_owned(),
        executable: false,
    };
    match lang {
        Lang::Rust => {
            let mut files = substituted(
                RUST_TEMPLATE,
                &[("{{name}}", name), ("{{crate_name}}", &snake)],
            );
            files.extend(copied(RUST_SDK, "weir-plugin-sdk"));
            files.push(wit("weir-plugin-sdk/wit/weir-cdc.wit"));
            if !files.iter().any(|f| f.path == "Cargo.lock") {
                files.push(ProjectFile {
                    path: "Cargo.lock".into(),
                    text: PLUGINS_CARGO_LOCK.to_owned(),
                    executable: false,
                });
            }
            files
        }
        Lang::Python | Lang::Js => {
            let (template, helper, toolchain) = match lang {
                Lang::Python => (PYTHON_TEMPLATE, PYTHON_HELPER, PYTHON_TOOLCHAIN),
                _ => (JS_TEMPLATE, JS_HELPER, JS_TOOLCHAIN),
            };
            let mut files =
                substituted(template, &[("{{name}}", name), ("{{module_name}}", &snake)]);
            files.extend(copied(helper, "weir_plugin"));
            files.extend(copied(toolchain, "toolchain"));
            files.push(wit("wit/weir-cdc.wit"));
            files
        }
    }
}

fn write_files(project: &Path, files: &[ProjectFile]) -> anyhow::Result<()> {
    for file in files {
        let path = project.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, &file.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if file.executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(())
}

/// Names Cargo refuses for a package: Rust keywords, and the built-in
/// crates a package name would shadow.
const RESERVED_RUST: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Checks that `name` can name the plugin, its directory, its package and
/// (in snake_case) its module.
fn check_name(lang: Lang, name: &str) -> anyhow::Result<()> {
    let rule = "a plugin name is lowercase letters, digits and '-', starting with a letter, \
                such as `mask-emails`";
    let Some(first) = name.chars().next() else {
        bail!("the plugin name is empty; {rule}");
    };
    if !first.is_ascii_lowercase() {
        bail!("invalid plugin name {name:?}: it must start with a lowercase letter; {rule}");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        bail!("invalid plugin name {name:?}: {bad:?} is not allowed; {rule}");
    }
    if lang == Lang::Rust {
        if RESERVED_RUST.contains(&name) {
            bail!(
                "invalid plugin name {name:?}: Cargo refuses it as a package name (a Rust \
                 keyword or built-in crate); choose another"
            );
        }
        if name == "weir-plugin-sdk" {
            bail!(
                "invalid plugin name {name:?}: the project holds a copy of the SDK under that \
                 name; choose another"
            );
        }
    }
    Ok(())
}

/// What to do next, with the project's own paths.
fn next_steps(lang: Lang, name: &str, project: &Path) -> String {
    let language = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    let mut text = format!(
        "Created the {language} plugin `{name}` in {}\n\nNext steps:\n  cd {}\n",
        project.display(),
        project.display()
    );
    let wasm = match lang {
        Lang::Rust => {
            let wasm = format!(
                "target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            );
            text.push_str(
                "  rustup target add wasm32-wasip2   # once\n\
                 \x20 cargo test-native                 # unit tests, natively\n",
            );
            text.push_str(&format!(
                "  cargo build --release             # writes {wasm}\n"
            ));
            wasm
        }
        Lang::Python => {
            text.push_str(
                "  python3 -m unittest               # unit tests, natively\n\
                 \x20 ./build.sh                        # tests, then builds the component \
                 (installs componentize-py the first time)\n",
            );
            format!("{name}.wasm")
        }
        Lang::Js => {
            text.push_str(
                "  node --test                       # unit tests, natively\n\
                 \x20 ./build.sh                        # tests, then builds the component \
                 (installs ComponentizeJS the first time)\n",
            );
            format!("{name}.wasm")
        }
    };
    text.push_str(&format!(
        "  weir plugin inspect {wasm}\n  weir plugin test {wasm} --events events.jsonl\n\n\
         events.jsonl holds a few changes as native JSON envelopes, one per line. For real rows:\n\
         \x20 weir plugin record --config weir.toml --table TABLE > events.jsonl\n\
         (a file sink's output works as it is too).\n\n\
         To run the plugin, add it to weir.toml as README.md shows. A running Weir takes each new \
         version with\n  weir plugin deploy {name} {wasm} --admin http://127.0.0.1:9187   \
         # add --shadow to try it first\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["mask", "mask-emails", "a1", "x-2-y"] {
            check_name(Lang::Rust, good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("Mask", "must start with a lowercase letter"),
            ("1mask", "must start with a lowercase letter"),
            ("-mask", "must start with a lowercase letter"),
            ("mask_emails", "'_' is not allowed"),
            ("mask.emails", "'.' is not allowed"),
            ("../evil", "must start with a lowercase letter"),
            ("a/b", "'/' is not allowed"),
            ("fn", "Cargo refuses it"),
            ("test", "Cargo refuses it"),
            ("weir-plugin-sdk", "copy of the SDK"),
        ] {
            let err = check_name(Lang::Rust, bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        // Only Cargo cares about Rust's keywords.
        check_name(Lang::Python, "test").unwrap();
    }

    #[test]
    fn a_rust_project_is_laid_out_like_check_rust_does() {
        let dir = tempfile::tempdir().unwrap();
        let project = create(Lang::Rust, "my-plugin", dir.path()).unwrap();
        assert_eq!(project, dir.path().join("my-plugin"));
        let read = |p: &str| std::fs::read_to_string(project.join(p)).unwrap();
        assert!(read("Cargo.toml").contains("name = \"my-plugin\""));
        assert!(read("README.md").contains("release/my_plugin.wasm"));
        assert!(read(".cargo/config.toml").contains("wasm32-wasip2"));
        assert!(read("src/lib.rs").contains("`my-plugin`"));
        assert!(read("weir-plugin-sdk/Cargo.toml").contains("name = \"weir-plugin-sdk\""));
        assert!(read("weir-plugin-sdk/src/lib.rs").len() > 100);
        assert_eq!(read("weir-plugin-sdk/wit/weir-cdc.wit"), WIT);
        assert!(
            !std::fs::symlink_metadata(project.join("weir-plugin-sdk/wit/weir-cdc.wit"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(read("Cargo.lock"), PLUGINS_CARGO_LOCK);

        // Never over anything.
        let again = create(Lang::Rust, "my-plugin", dir.path()).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        assert!(read("Cargo.toml").contains("name = \"my-plugin\""));
    }

    #[test]
    fn polyglot_projects_are_laid_out_like_check_polyglot_does() {
        let dir = tempfile::tempdir().unwrap();
        for (lang, source, helper) in [
            (Lang::Python, "plugin.py", "weir_plugin/__init__.py"),
            (Lang::Js, "plugin.js", "weir_plugin/index.js"),
        ] {
            let parent = dir.path().join(format!("{lang:?}"));
            let project = create(lang, "redact-pii", &parent).unwrap();
            let read = |p: &str| std::fs::read_to_string(project.join(p)).unwrap();
            assert!(read("README.md").contains("redact-pii"));
            assert!(read("build.sh").contains("redact-pii.wasm"));
            let mode = std::fs::metadata(project.join("build.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "{lang:?}: build.sh is executable");
            assert!(!read(source).contains("{{"));
            assert!(!read(helper).is_empty());
            assert_eq!(read("wit/weir-cdc.wit"), WIT);
            assert!(!project.join("Cargo.lock").exists());
            let installer = std::fs::metadata(project.join("toolchain/install.sh")).unwrap();
            assert_eq!(installer.permissions().mode() & 0o111, 0o111);
            assert!(read("build.sh").contains("toolchain/install.sh"));
            assert!(read("events.jsonl").lines().count() >= 4);
        }
    }

    #[test]
    fn next_steps_name_the_component() {
        let text = next_steps(Lang::Rust, "my-plugin", Path::new("/tmp/my-plugin"));
        assert!(text.contains("cd /tmp/my-plugin\n"), "{text}");
        assert!(text.contains("cargo test-native"), "{text}");
        assert!(
            text.contains("weir plugin test target/wasm32-wasip2/release/my_plugin.wasm --events"),
            "{text}"
        );
        let text = next_steps(Lang::Js, "my-plugin", Path::new("my-plugin"));
        assert!(
            text.contains("weir plugin inspect my-plugin.wasm"),
            "{text}"
        );
    }
}
