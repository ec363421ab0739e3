//! Which objects under a listed prefix a job takes: glob patterns on the key below the prefix.
//! `*`, `?` and `[…]` stay within one folder, `**` crosses folders, `{a,b}` is either; a pattern
//! without `/` is matched against the object's file name at any depth (as in `.gitignore`), so
//! `*.pdf` takes every PDF below the prefix and `2026/*.pdf` only those directly in `2026/`.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Patterns a list may hold, and the longest pattern.
pub const MAX_PATTERNS: usize = 20;
pub const MAX_PATTERN_BYTES: usize = 256;

#[derive(Debug, Clone)]
pub struct KeyFilter {
    include: Patterns,
    exclude: Patterns,
}

/// Why a pattern was refused: which list, its place in it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PatternError {
    pub list: &'static str,
    pub index: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone)]
struct Patterns {
    /// Matched against the whole key below the prefix.
    paths: GlobSet,
    /// Matched against the file name only (patterns without `/`).
    names: GlobSet,
    empty: bool,
}

impl Patterns {
    fn new(list: &'static str, patterns: &[String]) -> Result<Self, PatternError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError {
                list,
                index: None,
                message: format!("may hold at most {MAX_PATTERNS} patterns"),
            });
        }
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let refused = |message: String| PatternError {
                list,
                index: Some(index),
                message,
            };
            if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
                return Err(refused(format!(
                    "must be 1 to {MAX_PATTERN_BYTES} bytes long"
                )));
            }
            if pattern.chars().any(char::is_control) {
                return Err(refused("must not contain control characters".into()));
            }
            let glob: Glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| refused(format!("is not a valid glob pattern: {}", e.kind())))?;
            if pattern.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| PatternError {
                list,
                index: None,
                message: e.to_string(),
            })
        };
        Ok(Self {
            paths: build(paths)?,
            names: build(names)?,
            empty: patterns.is_empty(),
        })
    }

    fn matches(&self, below: &str) -> bool {
        let name = below.rsplit('/').next().unwrap_or(below);
        self.paths.is_match(below) || self.names.is_match(name)
    }
}

impl KeyFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, PatternError> {
        Ok(Self {
            include: Patterns::new("include", include)?,
            exclude: Patterns::new("exclude", exclude)?,
        })
    }

    /// Whether the object whose key below the prefix is `below` goes into the archive.
    pub fn takes(&self, below: &str) -> bool {
        (self.include.empty || self.include.matches(below)) && !self.exclude.matches(below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> KeyFilter {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        KeyFilter::new(&own(include), &own(exclude)).unwrap()
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_prefix() {
        let pdfs = filter(&["*.pdf"], &[]);
        assert!(pdfs.takes("a.pdf"));
        assert!(pdfs.takes("2026/03/a.pdf"));
        assert!(!pdfs.takes("a.pdf.txt"));
        let top = filter(&["2026/*.pdf"], &[]);
        assert!(top.takes("2026/a.pdf"));
        assert!(!top.takes("2026/03/a.pdf"));
        let deep = filter(&["2026/**/*.pdf"], &[]);
        assert!(deep.takes("2026/03/a.pdf"));
        assert!(deep.takes("2026/a.pdf"));
    }

    #[test]
    fn exclude_wins_and_no_include_takes_everything() {
        let f = filter(&[], &["drafts/**", "*.tmp"]);
        assert!(f.takes("final/a.pdf"));
        assert!(!f.takes("drafts/a.pdf"));
        assert!(!f.takes("final/x.tmp"));
        let both = filter(&["*.{jpg,png}"], &["thumbs/**"]);
        assert!(both.takes("a/b.png"));
        assert!(!both.takes("thumbs/b.png"));
        assert!(!both.takes("a/b.gif"));
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = KeyFilter::new(&["ok".into(), "a[".into()], &[]).unwrap_err();
        assert_eq!((err.list, err.index), ("include", Some(1)));
        let err = KeyFilter::new(&[], &[String::new()]).unwrap_err();
        assert_eq!((err.list, err.index), ("exclude", Some(0)));
        let many = vec!["*".to_owned(); MAX_PATTERNS + 1];
        assert_eq!(KeyFilter::new(&many, &[]).unwrap_err().index, None);
    }
}
