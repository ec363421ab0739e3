//! What a browser calls the archive when someone downloads it: the object's
//! `Content-Disposition`, `attachment` with the archive's file name (RFC 6266), in an ASCII form
//! every client reads and, where the name is not plain ASCII, an exact UTF-8 form (RFC 8187,
//! formerly RFC 5987) that current browsers prefer.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 8187's `attr-char`: everything else in a `filename*` value is percent-encoded.
const NOT_ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="…"` and, when the name needs it, `; filename*=UTF-8''…`.
pub fn attachment(file_name: &str) -> String {
    // The quoted form: printable ASCII without the two characters a quoted string escapes
    // (escapes that several clients do not undo); anything else becomes `_`.
    let fallback: String = file_name
        .chars()
        .map(|c| {
            if c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if fallback == file_name {
        format!("attachment; filename=\"{fallback}\"")
    } else {
        let exact = utf8_percent_encode(file_name, NOT_ATTR_CHAR);
        format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_name_is_quoted_as_it_is() {
        assert_eq!(
            attachment("exports 2026-12.zip"),
            "attachment; filename=\"exports 2026-12.zip\""
        );
    }

    #[test]
    fn a_unicode_name_has_an_ascii_fallback_and_the_exact_utf8_form() {
        // RFC 6266's own example's encoding of the euro sign and the space.
        assert_eq!(
            attachment("€ rates.zip"),
            "attachment; filename=\"_ rates.zip\"; filename*=UTF-8''%E2%82%AC%20rates.zip"
        );
        assert_eq!(
            attachment("客户归档.zip"),
            "attachment; filename=\"____.zip\"; \
             filename*=UTF-8''%E5%AE%A2%E6%88%B7%E5%BD%92%E6%A1%A3.zip"
        );
    }

    #[test]
    fn quotes_backslashes_and_separators_never_reach_the_quoted_form() {
        let header = attachment("a\"b\\c;d.zip");
        assert_eq!(
            header,
            "attachment; filename=\"a_b_c;d.zip\"; filename*=UTF-8''a%22b%5Cc%3Bd.zip"
        );
        // A header value: visible ASCII and spaces only.
        assert!(header.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
    }
}
