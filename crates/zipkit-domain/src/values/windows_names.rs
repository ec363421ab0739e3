//! Names Windows can create. An `EntryName` extracts safely everywhere; Windows refuses more
//! than that (Explorer reports the archive as invalid, or skips the file): some characters, a
//! trailing dot or space, the device names of DOS, and paths over 260 characters. A job either
//! has such names refused, naming the entry, or asks for them to be rewritten by the rule below
//! (`windows_safe_names`), which keeps every name of the job distinct.

use std::collections::HashSet;

use super::{EntryName, EntryNameError};

/// Longest path Windows creates without the long-path opt-in, in UTF-16 code units (MAX_PATH).
pub const MAX_WINDOWS_PATH: usize = 260;

/// The rewrite `windows_safe_names` applies, in words (shown on the dashboard and in the API
/// reference).
pub const WINDOWS_SAFE_RULE: &str = "each of < > : \" | ? * \\ and each control character \
    becomes _; a trailing dot or space of a folder or file name becomes _; a device name (CON, \
    PRN, AUX, NUL, COM1-9, LPT1-9, with any extension) gets _ after it (CON.txt becomes \
    CON_.txt); a path over 260 characters has its file name shortened, keeping the extension; \
    a name that then equals another one of the job gets \" (2)\", \" (3)\"… before its \
    extension.";

const RESERVED_CHARACTERS: &[char] = &['<', '>', ':', '"', '|', '?', '*', '\\'];
const DEVICE_NAMES: &[&str] = &["CON", "PRN", "AUX", "NUL"];

/// Why Windows cannot create a file under a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowsNameProblem {
    #[error("contains `{0}`, which Windows does not allow in file names")]
    ReservedCharacter(char),
    #[error("has a folder or file name ending in a dot or a space (`{0}`), which Windows drops")]
    TrailingDotOrSpace(String),
    #[error("uses `{0}`, a device name Windows reserves whatever the extension")]
    DeviceName(String),
    #[error("is {0} characters long; Windows creates paths of at most {MAX_WINDOWS_PATH}")]
    PathTooLong(usize),
}

impl EntryName {
    /// The first reason Windows could not create this name, if any.
    pub fn windows_problem(&self) -> Option<WindowsNameProblem> {
        let name = self.as_str();
        // `\` and control characters never get this far: `EntryName` refuses them.
        if let Some(c) = name.chars().find(|c| RESERVED_CHARACTERS.contains(c)) {
            return Some(WindowsNameProblem::ReservedCharacter(c));
        }
        for segment in name.split('/') {
            if segment.ends_with(['.', ' ']) {
                return Some(WindowsNameProblem::TrailingDotOrSpace(segment.to_owned()));
            }
            if let Some(device) = device_name(segment) {
                return Some(WindowsNameProblem::DeviceName(device.to_owned()));
            }
        }
        let length = windows_length(name);
        (length > MAX_WINDOWS_PATH).then_some(WindowsNameProblem::PathTooLong(length))
    }
}

/// The part of a segment Windows reads as a device name (before the first dot, trailing spaces
/// ignored), when it is one.
fn device_name(segment: &str) -> Option<&str> {
    let stem = segment
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    let numbered = |prefix: &str| {
        upper
            .strip_prefix(prefix)
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit() && n != "0")
    };
    (DEVICE_NAMES.contains(&upper.as_str()) || numbered("COM") || numbered("LPT")).then_some(stem)
}

/// Length as Windows counts it: UTF-16 code units, `/` counting as its `\`.
fn windows_length(name: &str) -> usize {
    name.encode_utf16().count()
}

/// Rewrites the names of one job by `WINDOWS_SAFE_RULE`, keeping them distinct: built with the
/// collision keys of every name the job gives, so that a rewritten name never takes one that
/// another entry uses as given.
#[derive(Debug, Default)]
pub struct WindowsSafeNames {
    taken: HashSet<String>,
}

impl WindowsSafeNames {
    /// `given` are the names of the job that need no rewrite.
    pub fn new<'a>(given: impl IntoIterator<Item = &'a EntryName>) -> Self {
        Self {
            taken: given.into_iter().map(EntryName::collision_key).collect(),
        }
    }

    /// Whether a name as given needs the rewrite (or is refused outright: `..`, a leading `/`).
    pub fn needs_rewrite(raw: &str) -> bool {
        match EntryName::parse(raw) {
            Ok(name) => name.windows_problem().is_some(),
            Err(EntryNameError::Backslash | EntryNameError::ControlCharacter) => true,
            Err(EntryNameError::Absolute) => has_drive_letter(raw) && !raw.starts_with('/'),
            Err(_) => false,
        }
    }

    /// `raw` rewritten: a name Windows can create, distinct from every name seen so far. Fails
    /// only as `EntryName::parse` would on the rewritten name (`..`, a leading `/`, too long), or
    /// when its folders alone pass 260 characters.
    pub fn rewrite(&mut self, raw: &str) -> Result<EntryName, RewriteError> {
        let replaced: String = raw
            .chars()
            .map(|c| {
                if RESERVED_CHARACTERS.contains(&c) || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let segments: Vec<String> = replaced.split('/').map(safe_segment).collect();
        let (folders, file) = segments.split_at(segments.len() - 1);
        let (stem, extension) = split_extension(&file[0]);
        for n in 1.. {
            let suffix = if n == 1 {
                String::new()
            } else {
                format!(" ({n})")
            };
            let candidate = fit(folders, stem, &suffix, extension)?;
            let name = EntryName::parse(&candidate).map_err(RewriteError::Name)?;
            if self.taken.insert(name.collision_key()) {
                return Ok(name);
            }
        }
        unreachable!("some number makes the name distinct")
    }
}

/// Why a name could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("{0}")]
    Name(EntryNameError),
    #[error(
        "has folders too long for Windows' {MAX_WINDOWS_PATH}-character paths even with the file name shortened"
    )]
    FoldersTooLong,
}

fn has_drive_letter(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// One folder or file name with its trailing dots and spaces and its device name made safe.
/// `.` and `..` stay as they are, for `EntryName::parse` to refuse.
fn safe_segment(segment: &str) -> String {
    if segment == "." || segment == ".." {
        return segment.to_owned();
    }
    let kept = segment.trim_end_matches(['.', ' ']);
    let trailing = segment.len() - kept.len();
    let mut out = kept.to_owned();
    if let Some(device) = device_name(kept) {
        out.insert(device.len(), '_');
    }
    out.extend(std::iter::repeat_n('_', trailing));
    out
}

/// A file name's stem and extension (with its dot); a leading dot is part of the stem.
fn split_extension(file: &str) -> (&str, &str) {
    match file.rfind('.') {
        Some(dot) if dot > 0 => file.split_at(dot),
        _ => (file, ""),
    }
}

/// The path with the stem cut (by characters; the suffix and extension kept) until it fits
/// `MAX_WINDOWS_PATH` and its file name `MAX_SEGMENT_BYTES`.
fn fit(
    folders: &[String],
    stem: &str,
    suffix: &str,
    extension: &str,
) -> Result<String, RewriteError> {
    let join = |stem: &str| {
        let file = format!("{stem}{suffix}{extension}");
        let fits = file.len() <= super::MAX_SEGMENT_BYTES;
        let path = folders
            .iter()
            .map(String::as_str)
            .chain([file.as_str()])
            .collect::<Vec<_>>()
            .join("/");
        (path, fits)
    };
    let mut stem = stem.to_owned();
    loop {
        let (path, fits) = join(&stem);
        if fits && windows_length(&path) <= MAX_WINDOWS_PATH {
            return Ok(path);
        }
        // A trailing space or dot left by the cut would be a new problem.
        stem.pop();
        let trimmed = stem.trim_end_matches(['.', ' ']).len();
        stem.truncate(trimmed);
        if stem.is_empty() {
            return Err(RewriteError::FoldersTooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn problem(name: &str) -> Option<WindowsNameProblem> {
        EntryName::parse(name).unwrap().windows_problem()
    }

    #[test]
    fn each_windows_rule_is_named() {
        for c in ['<', '>', ':', '"', '|', '?', '*'] {
            assert_eq!(
                problem(&format!("ab{c}c.txt")),
                Some(WindowsNameProblem::ReservedCharacter(c))
            );
        }
        for name in ["report.", "report ", "dir./a.txt", "dir /a.txt"] {
            assert!(
                matches!(
                    problem(name),
                    Some(WindowsNameProblem::TrailingDotOrSpace(_))
                ),
                "{name}"
            );
        }
        for (name, device) in [
            ("CON", "CON"),
            ("con.txt", "con"),
            ("dir/Aux.tar.gz", "Aux"),
            ("COM1.log", "COM1"),
            ("lpt9", "lpt9"),
            ("PRN/a.txt", "PRN"),
        ] {
            assert_eq!(
                problem(name),
                Some(WindowsNameProblem::DeviceName(device.to_owned())),
                "{name}"
            );
        }
        let long = format!("{}/{}.txt", "d".repeat(200), "f".repeat(60));
        assert_eq!(problem(&long), Some(WindowsNameProblem::PathTooLong(265)));
        // Windows counts UTF-16 units: an emoji is two.
        let emoji = format!("{}/{}📦", "x".repeat(150), "a".repeat(107));
        assert_eq!(windows_length(&emoji), 260);
        assert_eq!(problem(&emoji), None);
        assert_eq!(
            problem(&format!("{}/{}📦", "x".repeat(150), "a".repeat(108))),
            Some(WindowsNameProblem::PathTooLong(261))
        );
    }

    #[test]
    fn ordinary_names_have_no_problem() {
        for name in [
            "a.pdf",
            "docs/report 2026.pdf",
            "résumé/こんにちは.txt",
            ".hidden",
            "CONSOLE.txt",
            "COM10",
            "COM0",
            "a.b.c",
            "nul-not-a-device.txt",
        ] {
            assert_eq!(problem(name), None, "{name}");
        }
    }

    #[test]
    fn the_rewrite_follows_the_documented_rule() {
        let mut names = WindowsSafeNames::default();
        let cases = [
            ("a<b>c:d\"e|f?g*h.txt", "a_b_c_d_e_f_g_h.txt"),
            ("back\\slash.txt", "back_slash.txt"),
            ("tab\tname.txt", "tab_name.txt"),
            ("C:/x.txt", "C_/x.txt"),
            ("report.", "report_"),
            ("dir. /a.txt", "dir__/a.txt"),
            ("CON", "CON_"),
            ("con.txt", "con_.txt"),
            ("dir/LPT1.tar.gz", "dir/LPT1_.tar.gz"),
        ];
        for (raw, rewritten) in cases {
            assert!(WindowsSafeNames::needs_rewrite(raw), "{raw}");
            let name = names.rewrite(raw).unwrap();
            assert_eq!(name.as_str(), rewritten, "{raw}");
            assert_eq!(name.windows_problem(), None, "{raw}");
        }
        assert!(!WindowsSafeNames::needs_rewrite("plain.txt"));
        assert!(!WindowsSafeNames::needs_rewrite("../x"));
        assert!(!WindowsSafeNames::needs_rewrite("/etc/passwd"));
    }

    #[test]
    fn rewritten_names_stay_distinct_from_every_other_name() {
        let given = [EntryName::parse("a_b.txt").unwrap()];
        let mut names = WindowsSafeNames::new(&given);
        assert_eq!(names.rewrite("a:b.txt").unwrap().as_str(), "a_b (2).txt");
        assert_eq!(names.rewrite("a?b.txt").unwrap().as_str(), "a_b (3).txt");
        assert_eq!(names.rewrite("A*B.TXT").unwrap().as_str(), "A_B (4).TXT");
        assert_eq!(names.rewrite("noext?").unwrap().as_str(), "noext_");
        assert_eq!(names.rewrite("noext*").unwrap().as_str(), "noext_ (2)");
    }

    #[test]
    fn a_suffix_never_makes_a_file_name_longer_than_a_segment_may_be() {
        let long = format!("{}:.txt", "é".repeat(125)); // 250 + 1 + 4 bytes
        let taken = EntryName::parse(&long.replace(':', "_")).unwrap();
        let mut names = WindowsSafeNames::new([&taken]);
        let name = names.rewrite(&long).unwrap();
        assert!(name.as_str().ends_with(" (2).txt"), "{name}");
        assert!(name.as_str().len() <= crate::values::MAX_SEGMENT_BYTES);
    }

    #[test]
    fn a_long_path_loses_the_end_of_its_file_name_not_its_extension() {
        let mut names = WindowsSafeNames::default();
        let raw = format!("{}/{}.pdf", "d".repeat(100), "f".repeat(200));
        let name = names.rewrite(&raw).unwrap();
        assert_eq!(windows_length(name.as_str()), MAX_WINDOWS_PATH);
        assert!(name.as_str().ends_with("ff.pdf"));
        assert_eq!(name.windows_problem(), None);
        // Folders that leave no room for a file name cannot be rewritten.
        let deep = format!("{}/{}/x.pdf", "d".repeat(200), "e".repeat(100));
        assert_eq!(names.rewrite(&deep), Err(RewriteError::FoldersTooLong));
        // What is refused for safety stays refused.
        assert_eq!(
            names.rewrite("a/../b"),
            Err(RewriteError::Name(EntryNameError::DotDot))
        );
    }

    proptest! {
        #[test]
        fn every_rewritten_name_is_one_windows_can_create(raw in "[a-zA-Z<>:\"|?*\\\\. /\t]{1,40}") {
            let mut names = WindowsSafeNames::default();
            if let Ok(name) = names.rewrite(&raw) {
                prop_assert_eq!(name.windows_problem(), None);
            }
        }
    }
}
