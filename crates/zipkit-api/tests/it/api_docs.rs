//! docs/API.md lists every error code the API can send, and no code it cannot.

use std::collections::BTreeSet;
use std::path::Path;

/// The string literal that follows `marker` (after optional whitespace), each time it occurs.
fn literals_after(source: &str, marker: &str) -> Vec<String> {
    source
        .match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = source[at + marker.len()..].trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).expect("read a source file"));
        }
    }
}

#[test]
fn api_md_lists_exactly_the_error_codes_in_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    rust_files(&root.join("src"), &mut sources);
    let mut in_code = BTreeSet::new();
    for source in &sources {
        for marker in ["bad_request(", "not_found(", "conflict(", "code:"] {
            in_code.extend(literals_after(source, marker));
        }
    }
    // The codes fixed by variant, in `ApiError::code`.
    let error_rs = std::fs::read_to_string(root.join("src/error.rs")).expect("error.rs");
    let code_fn = &error_rs[error_rs.find("pub fn code(").expect("ApiError::code")..];
    let code_fn = &code_fn[..code_fn.find("\n    }\n").expect("end of code()")];
    in_code.extend(literals_after(code_fn, "=>"));
    in_code.retain(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));

    let api_md = std::fs::read_to_string(root.join("../../docs/API.md")).expect("docs/API.md");
    let documented: BTreeSet<String> = api_md
        .lines()
        .filter(|l| l.starts_with("| 4") || l.starts_with("| 5"))
        .filter_map(|l| l.split('|').nth(3))
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect();
    assert_eq!(
        documented, in_code,
        "docs/API.md's error table and the code disagree"
    );
}
