//! The repository stands alone: its documents and code never send a reader to a design file
//! that is not in it.

use std::path::{Path, PathBuf};

/// Text files under `dir`, recursively (build output and fuzz corpora left out).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let name = e.file_name();
        if matches!(name.to_str(), Some("target" | "corpus" | "artifacts")) {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|x| {
            ["rs", "md", "h", "cpp", "py", "json", "toml"].contains(&x.to_str().unwrap_or(""))
        }) {
            out.push(path);
        }
    }
}

#[test]
fn no_document_or_source_cites_a_design_file_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join("BENCHMARKS.md"),
        root.join(".ci/setup"),
    ];
    for dir in ["src", "tests", "benches", "cpp", "examples", "fuzz"] {
        files_under(&root.join(dir), &mut files);
    }
    // Spelled in two halves so this file does not cite it either.
    let citation = format!("{}{}", "DESIGN", " §");
    let cited: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let lines: Vec<String> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains(&citation))
                .map(|(i, _)| format!("{}:{}", f.display(), i + 1))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect();
    assert!(
        cited.is_empty(),
        "these cite a design file the repository does not have; say what is meant, or point to \
         the repository's own docs:\n{}",
        cited.join("\n")
    );
}

#[test]
fn the_readme_says_how_to_install_the_binary_cargo_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    // The binary README's commands call is the one the manifest declares.
    assert!(
        manifest.contains("[[bin]]\nname = \"dvdi\""),
        "Cargo.toml declares no dvdi binary"
    );
    for install in [
        "cargo install --path . --bin dvdi",
        "install -m 0755 target/release/dvdi /usr/local/bin/dvdi",
    ] {
        assert!(readme.contains(install), "README lacks {install:?}");
    }
}
